fn main() {
    std::process::exit(warden::daemon::cli::main().code());
}
