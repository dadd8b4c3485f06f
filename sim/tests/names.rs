//! Process names as the kext reads them: `proc_selfname` per release.

use std::ffi::{c_char, c_int};

use maptrace_sim::{Config, Release, Sim};

unsafe extern "C" {
    fn proc_selfname(buf: *mut c_char, size: c_int);
}

/// `proc_selfname` into a buffer pre-filled with 0xAA, as process `name`.
fn selfname(release: Release, name: &str, size: usize) -> Vec<u8> {
    let sim = Sim::boot(Config {
        release,
        ..Config::default()
    });
    let p = sim.spawn(name, 501);
    let mut buf = vec![0xAAu8; size];
    // SAFETY: buf holds size bytes.
    p.run_as(|| unsafe { proc_selfname(buf.as_mut_ptr().cast(), size as c_int) });
    buf
}

#[test]
fn proc_selfname_follows_the_release() {
    // xnu-11417.121.6: bzero(buf, size), then strlcpy of p_name.
    let b = selfname(Release::Sequoia, "helper", 12);
    assert_eq!(&b, b"helper\0\0\0\0\0\0");
    // xnu-7195.141.2: strlcpy of p_comm only; the rest is the caller's.
    let b = selfname(Release::Catalina, "helper", 12);
    assert_eq!(&b, b"helper\0\xAA\xAA\xAA\xAA\xAA");
    // A short buffer is cut and NUL-terminated at both.
    assert_eq!(&selfname(Release::Catalina, "helper", 4), b"hel\0");
    // size 0 writes nothing.
    assert_eq!(selfname(Release::Sequoia, "helper", 0), Vec::<u8>::new());
}
