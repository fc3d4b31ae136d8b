// The worker finds libtorch at run time through an rpath to the folder it was built against,
// so no LD_LIBRARY_PATH is needed. `PIPELINE_CUDA=1` at build time also links libtorch_cuda
// (needs the torch wheel's CUDA libraries at run time); without it the build is CPU-only and
// starts faster.
fn main() {
    println!("cargo:rerun-if-env-changed=PIPELINE_CUDA");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::env::var("PIPELINE_CUDA").is_ok_and(|v| v == "1") {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
        }
    }
}
