// The worker finds libtorch at run time through an rpath to the folder it was built against,
// so no LD_LIBRARY_PATH is needed. `PIPELINE_CUDA=1` at build time also links libtorch_cuda
// (needs the torch wheel's CUDA libraries at run time); without it the build is CPU-only and
// starts faster.
//
// The version of that libtorch (the torch wheel's `version.py`, or a libtorch archive's
// `build-version`) is compiled in as PIPELINE_LIBTORCH_VERSION, for the artifacts' metadata.
fn main() {
    println!("cargo:rerun-if-env-changed=PIPELINE_CUDA");
    let version = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| libtorch_version(std::path::Path::new(&lib)))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PIPELINE_LIBTORCH_VERSION={version}");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::env::var("PIPELINE_CUDA").is_ok_and(|v| v == "1") {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
        }
    }
}

fn libtorch_version(lib: &std::path::Path) -> Option<String> {
    let top = lib.parent()?;
    if let Ok(text) = std::fs::read_to_string(top.join("version.py")) {
        println!(
            "cargo:rerun-if-changed={}",
            top.join("version.py").display()
        );
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_string());
    }
    let v = std::fs::read_to_string(top.join("build-version")).ok()?;
    Some(v.trim().to_string())
}
