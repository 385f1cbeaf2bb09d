# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_synclock_global_optspecs
    string join \n lockfile= w/wait= n/nonblock E/conflict-exit-code= q/quiet v/verbose repo= no-clean no-outside-check coalesce min-interval= force h/help V/version
end

function __fish_synclock_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_synclock_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_synclock_using_subcommand
    set -l cmd (__fish_synclock_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c synclock -n "__fish_synclock_needs_command" -l lockfile -d 'The lockfile of all syncs (/run/synclock.lock)' -r -F
complete -c synclock -n "__fish_synclock_needs_command" -s w -l wait -d 'Give up after DURATION: 30 (s), 300ms, 5m, 1h' -r
complete -c synclock -n "__fish_synclock_needs_command" -s E -l conflict-exit-code -d 'Exit code when the lock was not had (75)' -r
complete -c synclock -n "__fish_synclock_needs_command" -l repo -d 'Also clean this repository (repeatable)' -r -F
complete -c synclock -n "__fish_synclock_needs_command" -l min-interval -d 'Skip if it succeeded less than DURATION ago' -r
complete -c synclock -n "__fish_synclock_needs_command" -s n -l nonblock -d 'Fail at once when the lock is held'
complete -c synclock -n "__fish_synclock_needs_command" -s q -l quiet -d 'Say nothing but errors'
complete -c synclock -n "__fish_synclock_needs_command" -s v -l verbose -d 'Also say waits, signals and the release'
complete -c synclock -n "__fish_synclock_needs_command" -l no-clean -d 'Do not clean leftovers of killed syncs'
complete -c synclock -n "__fish_synclock_needs_command" -l no-outside-check -d 'Do not wait for syncs outside synclock'
complete -c synclock -n "__fish_synclock_needs_command" -l coalesce -d 'Skip if the same sync succeeded meanwhile'
complete -c synclock -n "__fish_synclock_needs_command" -l force -d 'Run even if --coalesce or --min-interval skip'
complete -c synclock -n "__fish_synclock_needs_command" -s h -l help -d 'Print help'
complete -c synclock -n "__fish_synclock_needs_command" -s V -l version -d 'Print version'
complete -c synclock -n "__fish_synclock_needs_command" -a "status" -d 'Say who holds the lock (exit 0 free, 1 held)'
complete -c synclock -n "__fish_synclock_needs_command" -a "clean" -d 'Remove leftovers of killed syncs, under the lock'
complete -c synclock -n "__fish_synclock_using_subcommand status" -l lockfile -d 'The lockfile of all syncs (/run/synclock.lock)' -r -F
complete -c synclock -n "__fish_synclock_using_subcommand status" -s w -l wait -d 'Give up after DURATION: 30 (s), 300ms, 5m, 1h' -r
complete -c synclock -n "__fish_synclock_using_subcommand status" -s E -l conflict-exit-code -d 'Exit code when the lock was not had (75)' -r
complete -c synclock -n "__fish_synclock_using_subcommand status" -l repo -d 'Also clean this repository (repeatable)' -r -F
complete -c synclock -n "__fish_synclock_using_subcommand status" -l json -d 'Print one JSON object instead of text'
complete -c synclock -n "__fish_synclock_using_subcommand status" -s n -l nonblock -d 'Fail at once when the lock is held'
complete -c synclock -n "__fish_synclock_using_subcommand status" -s q -l quiet -d 'Say nothing but errors'
complete -c synclock -n "__fish_synclock_using_subcommand status" -s v -l verbose -d 'Also say waits, signals and the release'
complete -c synclock -n "__fish_synclock_using_subcommand status" -l no-outside-check -d 'Do not wait for syncs outside synclock'
complete -c synclock -n "__fish_synclock_using_subcommand status" -s h -l help -d 'Print help'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -l lockfile -d 'The lockfile of all syncs (/run/synclock.lock)' -r -F
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s w -l wait -d 'Give up after DURATION: 30 (s), 300ms, 5m, 1h' -r
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s E -l conflict-exit-code -d 'Exit code when the lock was not had (75)' -r
complete -c synclock -n "__fish_synclock_using_subcommand clean" -l repo -d 'Also clean this repository (repeatable)' -r -F
complete -c synclock -n "__fish_synclock_using_subcommand clean" -l dry-run -d 'List what would be removed, remove nothing'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s n -l nonblock -d 'Fail at once when the lock is held'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s q -l quiet -d 'Say nothing but errors'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s v -l verbose -d 'Also say waits, signals and the release'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -l no-outside-check -d 'Do not wait for syncs outside synclock'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s h -l help -d 'Print help'
