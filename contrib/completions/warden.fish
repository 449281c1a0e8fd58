# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_warden_global_optspecs
    string join \n h/help V/version
end

function __fish_warden_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_warden_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_warden_using_subcommand
    set -l cmd (__fish_warden_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c warden -n "__fish_warden_needs_command" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_needs_command" -s V -l version -d 'Print version'
complete -c warden -n "__fish_warden_needs_command" -f -a "start" -d 'Run the daemon (in the foreground unless --detach)'
complete -c warden -n "__fish_warden_needs_command" -f -a "stop" -d 'Stop the daemon of a port: SIGTERM, wait, then SIGKILL'
complete -c warden -n "__fish_warden_needs_command" -f -a "restart" -d 'Stop the daemon if it runs, then start it with the given flags'
complete -c warden -n "__fish_warden_needs_command" -f -a "reload" -d 'Make the running daemon re-read its configuration (SIGHUP)'
complete -c warden -n "__fish_warden_needs_command" -f -a "status" -d 'Whether a daemon runs on the port, and what it says about itself'
complete -c warden -n "__fish_warden_needs_command" -f -a "health" -d 'The running daemon\'s health: a summary per checker (`--json`: /health as is)'
complete -c warden -n "__fish_warden_needs_command" -f -a "logs" -d 'Print the end of the log file (like tail)'
complete -c warden -n "__fish_warden_needs_command" -f -a "doctor" -d 'Diagnose the port: PID file, port owner, config; print a troubleshooting guide'
complete -c warden -n "__fish_warden_needs_command" -f -a "config" -d 'Validate or show the configuration'
complete -c warden -n "__fish_warden_needs_command" -f -a "completions" -d 'Print a shell completion script (e.g. `warden completions bash > /etc/bash_completion.d/warden`)'
complete -c warden -n "__fish_warden_needs_command" -f -a "man" -d 'Print the manual page (roff; `warden man | man -l -`)'
complete -c warden -n "__fish_warden_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warden -n "__fish_warden_using_subcommand start" -l host -d 'Address to bind (default localhost)' -r
complete -c warden -n "__fish_warden_using_subcommand start" -l port -d 'Port to bind (default 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand start" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand start" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand start" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand start" -l detach -d 'Run in the background: print the pid once it serves, then exit'
complete -c warden -n "__fish_warden_using_subcommand start" -l detached-child -d 'Internal: this process is the child of `--detach`'
complete -c warden -n "__fish_warden_using_subcommand start" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand stop" -l host -d 'Host to contact (default: the host in the PID file, else the config\'s)' -r
complete -c warden -n "__fish_warden_using_subcommand stop" -l port -d 'Port of the daemon (default: the config\'s, 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand stop" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand stop" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand stop" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand stop" -l timeout -d 'Seconds to wait after SIGTERM before SIGKILL' -r
complete -c warden -n "__fish_warden_using_subcommand stop" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand restart" -l host -d 'Address to bind (default localhost)' -r
complete -c warden -n "__fish_warden_using_subcommand restart" -l port -d 'Port to bind (default 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand restart" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand restart" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand restart" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand restart" -l timeout -d 'Seconds to wait after SIGTERM before SIGKILL' -r
complete -c warden -n "__fish_warden_using_subcommand restart" -l detach -d 'Run in the background: print the pid once it serves, then exit'
complete -c warden -n "__fish_warden_using_subcommand restart" -l detached-child -d 'Internal: this process is the child of `--detach`'
complete -c warden -n "__fish_warden_using_subcommand restart" -l foreground -d 'Run in the foreground even if the instance was started with --detach'
complete -c warden -n "__fish_warden_using_subcommand restart" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand reload" -l host -d 'Host to contact (default: the host in the PID file, else the config\'s)' -r
complete -c warden -n "__fish_warden_using_subcommand reload" -l port -d 'Port of the daemon (default: the config\'s, 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand reload" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand reload" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand reload" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand reload" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand status" -l host -d 'Host to contact (default: the host in the PID file, else the config\'s)' -r
complete -c warden -n "__fish_warden_using_subcommand status" -l port -d 'Port of the daemon (default: the config\'s, 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand status" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand status" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand status" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand status" -l json -d 'One JSON object on stdout'
complete -c warden -n "__fish_warden_using_subcommand status" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand health" -l host -d 'Host to contact (default: the host in the PID file, else the config\'s)' -r
complete -c warden -n "__fish_warden_using_subcommand health" -l port -d 'Port of the daemon (default: the config\'s, 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand health" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand health" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand health" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand health" -l json -d 'One JSON object on stdout'
complete -c warden -n "__fish_warden_using_subcommand health" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand logs" -l port -d 'Port of the daemon (its config names the log file)' -r
complete -c warden -n "__fish_warden_using_subcommand logs" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand logs" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand logs" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand logs" -s n -l lines -d 'How many lines from the end' -r
complete -c warden -n "__fish_warden_using_subcommand logs" -s f -l follow -d 'Keep printing lines as they are written (until interrupted)'
complete -c warden -n "__fish_warden_using_subcommand logs" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand doctor" -l host -d 'Host to contact (default: the host in the PID file, else the config\'s)' -r
complete -c warden -n "__fish_warden_using_subcommand doctor" -l port -d 'Port of the daemon (default: the config\'s, 8765)' -r
complete -c warden -n "__fish_warden_using_subcommand doctor" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand doctor" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand doctor" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand doctor" -l output -d 'Write the report to FILE instead of stdout' -r -F
complete -c warden -n "__fish_warden_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand config; and not __fish_seen_subcommand_from check reference show help" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand config; and not __fish_seen_subcommand_from check reference show help" -f -a "check" -d 'Validate a config file without starting anything'
complete -c warden -n "__fish_warden_using_subcommand config; and not __fish_seen_subcommand_from check reference show help" -f -a "reference" -d 'Print the reference of every key: default, accepted values, effect (Markdown)'
complete -c warden -n "__fish_warden_using_subcommand config; and not __fish_seen_subcommand_from check reference show help" -f -a "show" -d 'Print the effective configuration (defaults < profile < file < flags) as JSON'
complete -c warden -n "__fish_warden_using_subcommand config; and not __fish_seen_subcommand_from check reference show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from check" -l profile -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from reference" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from show" -l host -r
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from show" -l port -r
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from show" -l config -d 'Config file (default: <state dir>/socketio-config.json when present)' -r -F
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory for the PID file and default log (default ~/.claude-mpm)' -r -F
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from show" -l profile -d 'Preset values under the file\'s own' -r -f -a "development\t''
production\t''
high-traffic\t''"
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate a config file without starting anything'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "reference" -d 'Print the reference of every key: default, accepted values, effect (Markdown)'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print the effective configuration (defaults < profile < file < flags) as JSON'
complete -c warden -n "__fish_warden_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warden -n "__fish_warden_using_subcommand completions" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand man" -s h -l help -d 'Print help'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "start" -d 'Run the daemon (in the foreground unless --detach)'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "stop" -d 'Stop the daemon of a port: SIGTERM, wait, then SIGKILL'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "restart" -d 'Stop the daemon if it runs, then start it with the given flags'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "reload" -d 'Make the running daemon re-read its configuration (SIGHUP)'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "status" -d 'Whether a daemon runs on the port, and what it says about itself'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "health" -d 'The running daemon\'s health: a summary per checker (`--json`: /health as is)'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "logs" -d 'Print the end of the log file (like tail)'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "doctor" -d 'Diagnose the port: PID file, port owner, config; print a troubleshooting guide'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "config" -d 'Validate or show the configuration'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "completions" -d 'Print a shell completion script (e.g. `warden completions bash > /etc/bash_completion.d/warden`)'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "man" -d 'Print the manual page (roff; `warden man | man -l -`)'
complete -c warden -n "__fish_warden_using_subcommand help; and not __fish_seen_subcommand_from start stop restart reload status health logs doctor config completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warden -n "__fish_warden_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate a config file without starting anything'
complete -c warden -n "__fish_warden_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "reference" -d 'Print the reference of every key: default, accepted values, effect (Markdown)'
complete -c warden -n "__fish_warden_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "show" -d 'Print the effective configuration (defaults < profile < file < flags) as JSON'
