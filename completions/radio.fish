# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_radio_global_optspecs
    string join \n color= h/help V/version
end

function __fish_radio_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_radio_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_radio_using_subcommand
    set -l cmd (__fish_radio_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c radio -n "__fish_radio_needs_command" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_needs_command" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_needs_command" -f -a "serve" -d 'Run the server: the WebSocket sync protocol at /ws, the media library, the web player at /, health and metrics'
complete -c radio -n "__fish_radio_needs_command" -f -a "broadcast" -d 'Run a station of the server\'s library from a shell: commands on stdin, or a playlist'
complete -c radio -n "__fish_radio_needs_command" -f -a "listen" -d 'Tune in from a terminal and show what plays and how well it is in sync; with --player mpv, hear it'
complete -c radio -n "__fish_radio_needs_command" -f -a "loadtest" -d 'Generate load against one or more servers and report fan-out latency, delivery and server cost'
complete -c radio -n "__fish_radio_needs_command" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c radio -n "__fish_radio_needs_command" -f -a "man" -d 'Show the man page of radio (or of one subcommand): through man on a terminal, its roff source to a file or a pipe'
complete -c radio -n "__fish_radio_needs_command" -f -a "loadtest-worker" -d 'Internal: one worker process of `radio loadtest` (reads its plan on stdin)'
complete -c radio -n "__fish_radio_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c radio -n "__fish_radio_using_subcommand serve" -s l -l listen -d 'Address to listen on, HOST:PORT: an IP address or a host name (every address it resolves to is bound, like 127.0.0.1 and ::1 for localhost); port 0 picks a free port (the bound address is logged)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l metrics-listen -d 'Serve /metrics on this address (HOST:PORT, plain HTTP) instead of --listen\'s, say on a private interface for the scraper alone; the main address then answers /metrics with 404' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l grace-period -d 'How long a station stays live after its broadcaster disconnects, waiting for it to resume with its token' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-message-bytes -d 'Largest inbound WebSocket message; larger ones close the connection (1009)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l keepalive-interval -d 'How often the server checks each connection: a ping, unless it was written states since the last check and acknowledged them all' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l keepalive-timeout -d 'A connection silent for this long (no frame, no pong, no acknowledged state) is closed' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l write-timeout -d 'A client that accepts no bytes for this long is closed (1008)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-connections -d 'Most concurrent connections, HTTP and WebSocket alike; more are answered 503 [default: 100000]. Given explicitly, the server warns at start when its open-files limit cannot hold that many' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-connections-per-ip -d 'Most concurrent connections from one client address (0: no limit); more are answered 429. IPv6: per /64, and 4 and 16 times it per /56 and /48' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-stations -d 'Most stations live or in their grace period at once; beyond it `start_broadcasting` is refused (`unsupported`)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-stations-per-ip -d 'Most stations live or in their grace period that one client address (its /64 for IPv6) may hold at once (0: no limit); beyond it `start_broadcasting` is refused (`too_many_stations`). Stations the server runs (--station) do not count' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l claim-rate -d '`start_broadcasting` requests one client address may send a minute, in bursts of that many (0: no limit); beyond it `rate_limited`. IPv6: per /64, and 4 and 16 times it per /56 and /48' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-list -d 'Most stations in one `stations` answer (and GET /api/stations); the most listened are kept and the answer says `truncated`' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l list-rate -d '`list_stations` requests a connection may send per second (bursts up to twice that; 0: no limit beyond --rate-limit); beyond it `rate_limited`' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l allowed-origins -d 'Web origins besides the server\'s own whose pages may open /ws and save sessions (comma-separated `scheme://host[:port]`; `*` for any)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l allowed-hosts -d 'Host names the server answers to besides IP addresses, localhost and the hosts of --allowed-origins (comma-separated; `*.example.com` for the names under it; `*` for any). A request for any other name (its Host header) is refused 421, against DNS rebinding: a server reached by a domain name needs it here' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l trusted-proxy -d 'A proxy (address or CIDR block) whose X-Forwarded-For / Forwarded headers name the real client; repeat for several' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l rate-limit -d 'Inbound messages a connection may send per second (bursts up to twice that); beyond it `rate_limited`, and a client that keeps on is closed (1008)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l handshake-timeout -d 'Time a client has to send its HTTP request and complete the WebSocket upgrade' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l shutdown-timeout -d 'On SIGINT/SIGTERM, how long to wait for connections to close before exiting' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l broadcast-key -d 'Require this key (at least 8 characters) in `start_broadcasting` (listeners need none). Prefer --broadcast-key-file: a key in argv is visible to every local user' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l broadcast-key-file -d 'Read the one broadcast key from this file\'s first line (it wins over --broadcast-key, so a RADIO_BROADCAST_KEY left in the environment does not get in its way)' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l broadcast-keys -d 'Per-station broadcast keys: lines `PATTERN KEY` (a station name or a glob like `team-*`; first match wins; keys of at least 8 characters); stations no line matches may not be broadcast. Read again on SIGHUP' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l tls-cert -d 'Serve https and wss with this certificate chain (PEM); needs --tls-key. Read again on SIGHUP' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l tls-key -d 'The private key (PEM) of --tls-cert' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l log-format -d 'Log format' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line, for log collectors'"
complete -c radio -n "__fish_radio_using_subcommand serve" -l redis -d 'Join a cluster through this Redis server (redis://[user:password@]host:port/db, or rediss:// for TLS), or through the Sentinels that name its master (redis+sentinel://host:port,host:port/MASTER[/db], or rediss+sentinel://)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l redis-ca-cert -d 'Cluster mode: trust this CA certificate (PEM) for a rediss:// Redis, or for the Sentinels and the master of a rediss+sentinel:// URL (default: the system\'s roots)' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l redis-password-file -d 'Cluster mode: read the Redis password (through Sentinel, the master\'s) from this file\'s first line, so it is neither in argv nor in the environment (the --redis URL then carries none)' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l redis-sentinel-password-file -d 'Cluster mode through Sentinel: read the Sentinels\' own password (their requirepass) from this file\'s first line. The master\'s password is the URL\'s or --redis-password-file\'s' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l node-id -d 'This node\'s id in the cluster (default: generated). Ids must be unique among the nodes sharing a Redis' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l lease -d 'Cluster mode: how long a station\'s lease lasts without renewal. When a node dies, listeners elsewhere are told its stations went offline (reason "timeout") about this long after, unless the broadcaster resumed on another node first' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -s m -l media -d 'Directory of audio and video to serve (scanned recursively). Without it a small generated demo library is served' -r -F
complete -c radio -n "__fish_radio_using_subcommand serve" -l station -d 'Run a station on the server itself, for ever: NAME=SOURCE[,shuffle], SOURCE an M3U playlist, a folder of the library (relative to --media) or `library` (all of it). Repeat for several; RADIO_STATIONS takes a list (commas or newlines). A broadcaster may take it over; it comes back to its SOURCE when the broadcaster stops. SIGHUP re-reads playlists. With --redis every node may name a station: one drives it at a time, and another takes over if it dies' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l rescan-interval -d 'Rescan the media library this often (it is also rescanned on SIGHUP)' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l follow-symlinks -d 'Follow symbolic links in the media directory when scanning (true or false); only links whose real target lies under --media are ever followed. Either way a file swapped after the scan is not served until a rescan' -r -f -a "true\t''
false\t''"
complete -c radio -n "__fish_radio_using_subcommand serve" -l loudness-cache -d 'File that keeps each track\'s measured loudness across restarts, so a restart decodes nothing again (`off`: kept in memory only). By default $XDG_CACHE_HOME/radio/ (else ~/.cache/radio/), one file per --media; never in the library itself' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l media-base-url -d 'Where players fetch the tracks: a CDN or object store that holds the library\'s files under /media/ (or pulls them from this server), like https://cdn.example.com. The library\'s track URLs, and so the web player and `radio listen --player mpv`, name it; this server still serves /media/ for the CDN to pull. See docs/cluster.md' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l session-ttl -d 'Private player sessions idle this long are removed' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l session-sweep -d 'How often idle sessions are swept' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l max-sessions -d 'Most private sessions kept; the least recently used is evicted beyond it' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l session-rate -d 'New private sessions one client address may create per minute (0: no limit); more are answered 429. IPv6: per /64, and 4 and 16 times it per /56 and /48' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l stream-bitrate -d 'Bitrate of each station\'s MP3 stream (/stations/NAME/stream), kb/s: one of 32 40 48 56 64 80 96 112 128 160 192 224 256 320' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l stream-burst -d 'The most audio a new stream listener is sent at once so its player starts at once (up to 10s; 0s still sends the newest fifth of a second, one chunk of frames); the stream is encoded this far ahead, so a seek or pause reaches stream listeners this late' -r
complete -c radio -n "__fish_radio_using_subcommand serve" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand serve" -l reuse-port -d 'Share the listening port with other processes (SO_REUSEPORT)'
complete -c radio -n "__fish_radio_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand serve" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand broadcast" -s u -l url -d 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next' -r
complete -c radio -n "__fish_radio_using_subcommand broadcast" -s s -l station -d 'Station name (1-64 of A-Z a-z 0-9 . _ -)' -r
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l ca-cert -d 'Trust this CA certificate (PEM) instead of the Mozilla roots, for the server\'s wss:// and https:// (its library, its media; mpv too): for a server with a private CA or a self-signed certificate' -r -F
complete -c radio -n "__fish_radio_using_subcommand broadcast" -s k -l key -d 'Broadcast key, when the server requires one' -r
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l key-file -d 'Read the broadcast key from this file (its first line), so that it is in neither argv, which every local user can read, nor the environment; it wins over --key' -r -F
complete -c radio -n "__fish_radio_using_subcommand broadcast" -s p -l playlist -d 'Play this M3U playlist in order, looping. Each entry (a path relative to the playlist\'s folder, or absolute) resolves to a library track; stdin still takes commands, and its end does not stop the station' -r -F
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l heartbeat-interval -d 'How often to send a heartbeat while playing' -r
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l free-tracks -d 'Send tracks as written instead of resolving them in the server\'s library (for stations whose listeners play their own files); needed when the server has no library to read'
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l stop-at-end -d 'At a track\'s end, pause there instead of playing the next track'
complete -c radio -n "__fish_radio_using_subcommand broadcast" -l json -d 'Print each state as one JSON line instead of a sentence'
complete -c radio -n "__fish_radio_using_subcommand broadcast" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand broadcast" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand listen" -s u -l url -d 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next' -r
complete -c radio -n "__fish_radio_using_subcommand listen" -s s -l station -d 'Station name (1-64 of A-Z a-z 0-9 . _ -)' -r
complete -c radio -n "__fish_radio_using_subcommand listen" -l ca-cert -d 'Trust this CA certificate (PEM) instead of the Mozilla roots, for the server\'s wss:// and https:// (its library, its media; mpv too): for a server with a private CA or a self-signed certificate' -r -F
complete -c radio -n "__fish_radio_using_subcommand listen" -l player -d 'Play the station\'s sound through this player, kept on the station\'s position (it must be installed: `apt-get install mpv`)' -r -f -a "mpv\t'mpv, over its JSON IPC'"
complete -c radio -n "__fish_radio_using_subcommand listen" -l player-arg -d 'An argument for the player, repeatable: --player-arg=--volume=50, --player-arg=--ao=pulse. With --player-arg=--input-ipc-server=PATH the player\'s control socket is that path instead of a private one. Keep the audio output real-time: a file output (--ao=pcm) runs ahead of the station; to record it, record a real-time output' -r
complete -c radio -n "__fish_radio_using_subcommand listen" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand listen" -l json -d 'Print every frame received as one JSON line (for scripts) instead of a status line; with --player, also a `player` line a second. Pongs are printed only with --verbose'
complete -c radio -n "__fish_radio_using_subcommand listen" -s v -l verbose -d 'With --json, also print the pongs of the clock\'s pings'
complete -c radio -n "__fish_radio_using_subcommand listen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand listen" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand loadtest" -s u -l url -d 'Server to load; repeat to spread listeners over several nodes' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l listeners -d 'Listeners to connect in total' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l stations -d 'Stations (one broadcaster each); listeners are spread evenly' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l duration -d 'How long to run once every listener is connected' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l update-interval -d 'Each broadcaster sends an `update` this often' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l heartbeat-interval -d 'Each broadcaster also sends a `heartbeat` this often (off by default)' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l connect-rate -d 'New connections per second, over all workers (0: as fast as accepted)' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l churn -d 'Once every listener is connected, replace this many a minute (one disconnect and one connect each), like `1000/min` or `20/s`' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l workers -d 'Worker processes, or `auto` (one per 15,000 connections)' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l source-addrs -d 'Local addresses to bind client sockets to: a range `A-B` or a list `A,B` (default for a loopback target: 127.0.0.1 onward, as many as needed)' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l station-prefix -d 'Prefix of the station names used' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l listen-only -d 'Play no broadcaster: tune the listeners to these stations, which already play (a server-run station, `radio serve --station`), and measure the states the server publishes. Repeat, or list them: a,b' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l key -d 'Broadcast key, when the server requires one' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l json -d 'Write the report as JSON to this file' -r -F
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l max-p99 -d 'Fail (exit 1) when fan-out p99 exceeds this' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l min-delivery -d 'Fail (exit 1) when final-state delivery is below this percentage' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l server-pid -d 'Measure this server process\'s memory and CPU (repeat for several, or list them: 12,34)' -r
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l ca-cert -d 'Trust this CA certificate (PEM) instead of the Mozilla roots, for a wss:// server with a private CA or a self-signed certificate (the listeners, broadcasters and observers all use it)' -r -F
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l fetch-media -d 'Each listener also fetches its media as the web player does: the track it is told at tune-in and each change (`Range: bytes=0-`), and with `prefetch` (the default) the announced next track ahead of its start. Reports bytes per listener, time from a track\'s start to holding its first 256 KiB, and requests refused' -r -f -a "prefetch\t'The current track at tune-in and each track change, and the announced next track ahead of time (as the web player does)'
current\t'Only the current track, at tune-in and at each track change'"
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l reconnect -d 'On a lost connection, listeners connect again to the next --url and broadcasters resume their station there, with the clients\' backoff; the report counts reconnects. SIGUSR1 marks a moment (a fault): the report says how long until every listener held the newest state again'
complete -c radio -n "__fish_radio_using_subcommand loadtest" -l stream -d 'Read HTTP audio streams instead of holding WebSocket listeners: each of --listeners reads a stream, measuring the time to its first audio byte, its bytes a second, its stalls (over 1 s without a byte) and the audio lost against the stream\'s bitrate. With --listen-only STATION it reads URL/stations/STATION/stream; without, each --url is a stream itself (an Icecast mount, say)'
complete -c radio -n "__fish_radio_using_subcommand loadtest" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand loadtest" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand completions" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand completions" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand man" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand man" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand loadtest-worker" -l color -d 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set (to anything but empty)'
always\t''
never\t''"
complete -c radio -n "__fish_radio_using_subcommand loadtest-worker" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c radio -n "__fish_radio_using_subcommand loadtest-worker" -s V -l version -d 'Print version'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "serve" -d 'Run the server: the WebSocket sync protocol at /ws, the media library, the web player at /, health and metrics'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "broadcast" -d 'Run a station of the server\'s library from a shell: commands on stdin, or a playlist'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "listen" -d 'Tune in from a terminal and show what plays and how well it is in sync; with --player mpv, hear it'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "loadtest" -d 'Generate load against one or more servers and report fan-out latency, delivery and server cost'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "man" -d 'Show the man page of radio (or of one subcommand): through man on a terminal, its roff source to a file or a pipe'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "loadtest-worker" -d 'Internal: one worker process of `radio loadtest` (reads its plan on stdin)'
complete -c radio -n "__fish_radio_using_subcommand help; and not __fish_seen_subcommand_from serve broadcast listen loadtest completions man loadtest-worker help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
