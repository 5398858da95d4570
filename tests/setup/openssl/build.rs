//! Builds OpenSSL (static libraries and headers) with the openssl-src crate and installs
//! it under $OSSL_PREFIX/install (include/, lib/libcrypto.a, lib/libssl.a), for
//! tests/setup/openssl.sh.
fn main() {
    println!("cargo:rerun-if-env-changed=OSSL_PREFIX");
    let out =
        std::path::PathBuf::from(std::env::var("OSSL_PREFIX").expect("set OSSL_PREFIX (tests/setup/openssl.sh does)"));
    let artifacts = openssl_src::Build::new().out_dir(&out).build();
    println!("cargo:warning=OpenSSL headers in {}", artifacts.include_dir().display());
    println!("cargo:warning=OpenSSL libraries in {}", artifacts.lib_dir().display());
}
