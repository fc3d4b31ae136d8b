//! `pipeline-worker`: runs one stage run that the engine hands it (`run`, the job as JSON on
//! stdin), or lists the kinds it computes (`kinds`, in `pipeline kinds`' format).

fn main() {
    let stages = worker::stages();
    let code = match std::env::args().nth(1).as_deref() {
        Some("run") => {
            worker::note_libraries();
            pipeline::run::worker::serve(&stages, &worker::torch::set_threads)
        }
        Some("kinds") => {
            print!(
                "{}",
                stages::registry::listing(stages.iter().map(|s| s.decl()))
            );
            0
        }
        _ => {
            eprintln!(
                "pipeline-worker runs stages for `pipeline`, which starts it: \
                 `pipeline-worker run` (a job on stdin) or `pipeline-worker kinds`"
            );
            2
        }
    };
    std::process::exit(code);
}
