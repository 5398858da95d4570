//! Nothing to run: the build script (build.rs) does the work of building OpenSSL.
fn main() {}
