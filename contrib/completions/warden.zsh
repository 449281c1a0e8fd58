#compdef warden

autoload -U is-at-least

_warden() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_warden_commands" \
"*::: :->warden" \
&& ret=0
    case $state in
    (warden)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:warden-command-$line[1]:"
        case $line[1] in
            (start)
_arguments "${_arguments_options[@]}" : \
'--host=[Address to bind (default localhost)]:HOST:_default' \
'--port=[Port to bind (default 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'--detach[Run in the background\: print the pid once it serves, then exit]' \
'--detached-child[Internal\: this process is the child of \`--detach\`]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(stop)
_arguments "${_arguments_options[@]}" : \
'--host=[Host to contact (default\: the host in the PID file, else the config'\''s)]:HOST:_default' \
'--port=[Port of the daemon (default\: the config'\''s, 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'--timeout=[Seconds to wait after SIGTERM before SIGKILL]:SECS:_default' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(restart)
_arguments "${_arguments_options[@]}" : \
'--host=[Address to bind (default localhost)]:HOST:_default' \
'--port=[Port to bind (default 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'--timeout=[Seconds to wait after SIGTERM before SIGKILL]:SECS:_default' \
'--detach[Run in the background\: print the pid once it serves, then exit]' \
'--detached-child[Internal\: this process is the child of \`--detach\`]' \
'(--detach)--foreground[Run in the foreground even if the instance was started with --detach]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(reload)
_arguments "${_arguments_options[@]}" : \
'--host=[Host to contact (default\: the host in the PID file, else the config'\''s)]:HOST:_default' \
'--port=[Port of the daemon (default\: the config'\''s, 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
'--host=[Host to contact (default\: the host in the PID file, else the config'\''s)]:HOST:_default' \
'--port=[Port of the daemon (default\: the config'\''s, 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'--json[One JSON object on stdout]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(health)
_arguments "${_arguments_options[@]}" : \
'--host=[Host to contact (default\: the host in the PID file, else the config'\''s)]:HOST:_default' \
'--port=[Port of the daemon (default\: the config'\''s, 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'--json[One JSON object on stdout]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(logs)
_arguments "${_arguments_options[@]}" : \
'--port=[Port of the daemon (its config names the log file)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'-n+[How many lines from the end]:N:_default' \
'--lines=[How many lines from the end]:N:_default' \
'-f[Keep printing lines as they are written (until interrupted)]' \
'--follow[Keep printing lines as they are written (until interrupted)]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(doctor)
_arguments "${_arguments_options[@]}" : \
'--host=[Host to contact (default\: the host in the PID file, else the config'\''s)]:HOST:_default' \
'--port=[Port of the daemon (default\: the config'\''s, 8765)]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'--output=[Write the report to FILE instead of stdout]:FILE:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(config)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
":: :_warden__subcmd__config_commands" \
"*::: :->config" \
&& ret=0

    case $state in
    (config)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:warden-config-command-$line[1]:"
        case $line[1] in
            (check)
_arguments "${_arguments_options[@]}" : \
'--profile=[]:PROFILE:(development production high-traffic)' \
'-h[Print help]' \
'--help[Print help]' \
':file:_files' \
&& ret=0
;;
(reference)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(show)
_arguments "${_arguments_options[@]}" : \
'--host=[]:HOST:_default' \
'--port=[]:PORT:_default' \
'--config=[Config file (default\: <state dir>/socketio-config.json when present)]:FILE:_files' \
'--state-dir=[State directory for the PID file and default log (default ~/.claude-mpm)]:DIR:_files' \
'--profile=[Preset values under the file'\''s own]:PROFILE:(development production high-traffic)' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_warden__subcmd__config__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:warden-config-help-command-$line[1]:"
        case $line[1] in
            (check)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(reference)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(show)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
':shell:(bash elvish fish powershell zsh)' \
&& ret=0
;;
(man)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_warden__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:warden-help-command-$line[1]:"
        case $line[1] in
            (start)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(stop)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(restart)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(reload)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(health)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(logs)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(doctor)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(config)
_arguments "${_arguments_options[@]}" : \
":: :_warden__subcmd__help__subcmd__config_commands" \
"*::: :->config" \
&& ret=0

    case $state in
    (config)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:warden-help-config-command-$line[1]:"
        case $line[1] in
            (check)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(reference)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(show)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(man)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_warden_commands] )) ||
_warden_commands() {
    local commands; commands=(
'start:Run the daemon (in the foreground unless --detach)' \
'stop:Stop the daemon of a port\: SIGTERM, wait, then SIGKILL' \
'restart:Stop the daemon if it runs, then start it with the given flags' \
'reload:Make the running daemon re-read its configuration (SIGHUP)' \
'status:Whether a daemon runs on the port, and what it says about itself' \
'health:The running daemon'\''s health\: a summary per checker (\`--json\`\: /health as is)' \
'logs:Print the end of the log file (like tail)' \
'doctor:Diagnose the port\: PID file, port owner, config; print a troubleshooting guide' \
'config:Validate or show the configuration' \
'completions:Print a shell completion script (e.g. \`warden completions bash > /etc/bash_completion.d/warden\`)' \
'man:Print the manual page (roff; \`warden man | man -l -\`)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'warden commands' commands "$@"
}
(( $+functions[_warden__subcmd__completions_commands] )) ||
_warden__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'warden completions commands' commands "$@"
}
(( $+functions[_warden__subcmd__config_commands] )) ||
_warden__subcmd__config_commands() {
    local commands; commands=(
'check:Validate a config file without starting anything' \
'reference:Print the reference of every key\: default, accepted values, effect (Markdown)' \
'show:Print the effective configuration (defaults < profile < file < flags) as JSON' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'warden config commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__check_commands] )) ||
_warden__subcmd__config__subcmd__check_commands() {
    local commands; commands=()
    _describe -t commands 'warden config check commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__help_commands] )) ||
_warden__subcmd__config__subcmd__help_commands() {
    local commands; commands=(
'check:Validate a config file without starting anything' \
'reference:Print the reference of every key\: default, accepted values, effect (Markdown)' \
'show:Print the effective configuration (defaults < profile < file < flags) as JSON' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'warden config help commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__help__subcmd__check_commands] )) ||
_warden__subcmd__config__subcmd__help__subcmd__check_commands() {
    local commands; commands=()
    _describe -t commands 'warden config help check commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__help__subcmd__help_commands] )) ||
_warden__subcmd__config__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'warden config help help commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__help__subcmd__reference_commands] )) ||
_warden__subcmd__config__subcmd__help__subcmd__reference_commands() {
    local commands; commands=()
    _describe -t commands 'warden config help reference commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__help__subcmd__show_commands] )) ||
_warden__subcmd__config__subcmd__help__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'warden config help show commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__reference_commands] )) ||
_warden__subcmd__config__subcmd__reference_commands() {
    local commands; commands=()
    _describe -t commands 'warden config reference commands' commands "$@"
}
(( $+functions[_warden__subcmd__config__subcmd__show_commands] )) ||
_warden__subcmd__config__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'warden config show commands' commands "$@"
}
(( $+functions[_warden__subcmd__doctor_commands] )) ||
_warden__subcmd__doctor_commands() {
    local commands; commands=()
    _describe -t commands 'warden doctor commands' commands "$@"
}
(( $+functions[_warden__subcmd__health_commands] )) ||
_warden__subcmd__health_commands() {
    local commands; commands=()
    _describe -t commands 'warden health commands' commands "$@"
}
(( $+functions[_warden__subcmd__help_commands] )) ||
_warden__subcmd__help_commands() {
    local commands; commands=(
'start:Run the daemon (in the foreground unless --detach)' \
'stop:Stop the daemon of a port\: SIGTERM, wait, then SIGKILL' \
'restart:Stop the daemon if it runs, then start it with the given flags' \
'reload:Make the running daemon re-read its configuration (SIGHUP)' \
'status:Whether a daemon runs on the port, and what it says about itself' \
'health:The running daemon'\''s health\: a summary per checker (\`--json\`\: /health as is)' \
'logs:Print the end of the log file (like tail)' \
'doctor:Diagnose the port\: PID file, port owner, config; print a troubleshooting guide' \
'config:Validate or show the configuration' \
'completions:Print a shell completion script (e.g. \`warden completions bash > /etc/bash_completion.d/warden\`)' \
'man:Print the manual page (roff; \`warden man | man -l -\`)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'warden help commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__completions_commands] )) ||
_warden__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'warden help completions commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__config_commands] )) ||
_warden__subcmd__help__subcmd__config_commands() {
    local commands; commands=(
'check:Validate a config file without starting anything' \
'reference:Print the reference of every key\: default, accepted values, effect (Markdown)' \
'show:Print the effective configuration (defaults < profile < file < flags) as JSON' \
    )
    _describe -t commands 'warden help config commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__config__subcmd__check_commands] )) ||
_warden__subcmd__help__subcmd__config__subcmd__check_commands() {
    local commands; commands=()
    _describe -t commands 'warden help config check commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__config__subcmd__reference_commands] )) ||
_warden__subcmd__help__subcmd__config__subcmd__reference_commands() {
    local commands; commands=()
    _describe -t commands 'warden help config reference commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__config__subcmd__show_commands] )) ||
_warden__subcmd__help__subcmd__config__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'warden help config show commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__doctor_commands] )) ||
_warden__subcmd__help__subcmd__doctor_commands() {
    local commands; commands=()
    _describe -t commands 'warden help doctor commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__health_commands] )) ||
_warden__subcmd__help__subcmd__health_commands() {
    local commands; commands=()
    _describe -t commands 'warden help health commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__help_commands] )) ||
_warden__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'warden help help commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__logs_commands] )) ||
_warden__subcmd__help__subcmd__logs_commands() {
    local commands; commands=()
    _describe -t commands 'warden help logs commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__man_commands] )) ||
_warden__subcmd__help__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'warden help man commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__reload_commands] )) ||
_warden__subcmd__help__subcmd__reload_commands() {
    local commands; commands=()
    _describe -t commands 'warden help reload commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__restart_commands] )) ||
_warden__subcmd__help__subcmd__restart_commands() {
    local commands; commands=()
    _describe -t commands 'warden help restart commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__start_commands] )) ||
_warden__subcmd__help__subcmd__start_commands() {
    local commands; commands=()
    _describe -t commands 'warden help start commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__status_commands] )) ||
_warden__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'warden help status commands' commands "$@"
}
(( $+functions[_warden__subcmd__help__subcmd__stop_commands] )) ||
_warden__subcmd__help__subcmd__stop_commands() {
    local commands; commands=()
    _describe -t commands 'warden help stop commands' commands "$@"
}
(( $+functions[_warden__subcmd__logs_commands] )) ||
_warden__subcmd__logs_commands() {
    local commands; commands=()
    _describe -t commands 'warden logs commands' commands "$@"
}
(( $+functions[_warden__subcmd__man_commands] )) ||
_warden__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'warden man commands' commands "$@"
}
(( $+functions[_warden__subcmd__reload_commands] )) ||
_warden__subcmd__reload_commands() {
    local commands; commands=()
    _describe -t commands 'warden reload commands' commands "$@"
}
(( $+functions[_warden__subcmd__restart_commands] )) ||
_warden__subcmd__restart_commands() {
    local commands; commands=()
    _describe -t commands 'warden restart commands' commands "$@"
}
(( $+functions[_warden__subcmd__start_commands] )) ||
_warden__subcmd__start_commands() {
    local commands; commands=()
    _describe -t commands 'warden start commands' commands "$@"
}
(( $+functions[_warden__subcmd__status_commands] )) ||
_warden__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'warden status commands' commands "$@"
}
(( $+functions[_warden__subcmd__stop_commands] )) ||
_warden__subcmd__stop_commands() {
    local commands; commands=()
    _describe -t commands 'warden stop commands' commands "$@"
}

if [ "$funcstack[1]" = "_warden" ]; then
    _warden "$@"
else
    compdef _warden warden
fi
