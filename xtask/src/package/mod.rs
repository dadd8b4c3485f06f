//! From checked objects to a kext on a Mac: the final link, the bundle, its checks, signing,
//! and the test VM.

pub mod bundle;
pub mod kextcheck;
pub mod link;
pub mod sign;
pub mod signcheck;
pub mod vmtest;
