//! Building the kext's objects and checking them: kernel flags, the cross build, the object
//! checks, the stack budget and the KPI table.

pub mod check;
pub mod cross;
pub mod kernel;
pub mod kpi;
pub mod objects;
pub mod stack;
