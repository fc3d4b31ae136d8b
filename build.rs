// Both crates link libtorch and need the same rpath; one copy of the logic.
include!("stages/build.rs");
