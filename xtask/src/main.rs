use clap::Parser;

fn main() {
    // An empty setting means "unset": the Makefile exports every variable it
    // forwards, set or not, and `ARCH= make …` is a common way to unset one.
    for name in xtask::config::VARIABLES.map(|v| v.name) {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
    let cli = xtask::cli::Cli::parse();
    let json = cli.json();
    match xtask::run(cli) {
        Ok(0) => {}
        Ok(status) => std::process::exit(status),
        Err(e) if xtask::is_broken_pipe(&e) => {}
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("error: {message}");
            if json {
                let _ = xtask::report::print_json(&serde_json::json!({ "error": message }));
            }
            std::process::exit(xtask::EXIT_FAILURE);
        }
    }
}
