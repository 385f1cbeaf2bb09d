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

complete -c synclock -n "__fish_synclock_needs_command" -l lockfile -d 'The lockfile shared by every sync on this machine (env SYNCLOCK_LOCKFILE)' -r -F
complete -c synclock -n "__fish_synclock_needs_command" -s w -l wait -d 'Give up after waiting this long: 300ms, 90s, 5m, "1h 30m"; a bare number means seconds; 0 means do not wait. Default: wait without limit' -r
complete -c synclock -n "__fish_synclock_needs_command" -s E -l conflict-exit-code -d 'Exit code when the lock could not be had' -r
complete -c synclock -n "__fish_synclock_needs_command" -l repo -d 'Also clean this repository location (repeatable), besides those in repos.conf' -r -F
complete -c synclock -n "__fish_synclock_needs_command" -l min-interval -d 'Do not run COMMAND if the same command line last succeeded less than DURATION ago (env SYNCLOCK_MIN_INTERVAL)' -r
complete -c synclock -n "__fish_synclock_needs_command" -s n -l nonblock -d 'Fail at once when the lock is held (same as --wait 0)'
complete -c synclock -n "__fish_synclock_needs_command" -s q -l quiet -d 'Say nothing but errors'
complete -c synclock -n "__fish_synclock_needs_command" -s v -l verbose -d 'Also report the time spent waiting and the release of the lock'
complete -c synclock -n "__fish_synclock_needs_command" -l no-clean -d 'Do not clean stale sync leftovers before running COMMAND'
complete -c synclock -n "__fish_synclock_needs_command" -l no-outside-check -d 'Do not look for syncs that run outside synclock, for a COMMAND that is no Portage sync (env SYNCLOCK_NO_OUTSIDE_CHECK)'
complete -c synclock -n "__fish_synclock_needs_command" -l coalesce -d 'Do not run COMMAND if the same command line finished successfully under the lock while this invocation waited (env SYNCLOCK_COALESCE)'
complete -c synclock -n "__fish_synclock_needs_command" -l force -d 'Run COMMAND even when --coalesce or --min-interval would skip it'
complete -c synclock -n "__fish_synclock_needs_command" -s h -l help -d 'Print help'
complete -c synclock -n "__fish_synclock_needs_command" -s V -l version -d 'Print version'
complete -c synclock -n "__fish_synclock_needs_command" -a "status" -d 'Tell whether the lock is free, who holds it and who waits (exit 0 free, 1 held, 125 error)'
complete -c synclock -n "__fish_synclock_needs_command" -a "clean" -d 'Take the lock, remove stale sync leftovers, run nothing (exit 0, or 125 if something could not be removed)'
complete -c synclock -n "__fish_synclock_using_subcommand status" -l json -d 'Print one JSON object instead of text'
complete -c synclock -n "__fish_synclock_using_subcommand status" -s h -l help -d 'Print help'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -l dry-run -d 'List what would be removed, remove nothing'
complete -c synclock -n "__fish_synclock_using_subcommand clean" -s h -l help -d 'Print help'
