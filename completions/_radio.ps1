
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'radio' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'radio'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'radio' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the server: the WebSocket sync protocol at /ws, the media library, the web player at /, health and metrics')
            [CompletionResult]::new('broadcast', 'broadcast', [CompletionResultType]::ParameterValue, 'Run a station of the server''s library from a shell: commands on stdin, or a playlist')
            [CompletionResult]::new('listen', 'listen', [CompletionResultType]::ParameterValue, 'Tune in from a terminal and show what plays and how well it is in sync; with --player mpv, hear it')
            [CompletionResult]::new('loadtest', 'loadtest', [CompletionResultType]::ParameterValue, 'Generate load against one or more servers and report fan-out latency, delivery and server cost')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Show the man page of radio (or of one subcommand): through man on a terminal, its roff source to a file or a pipe')
            [CompletionResult]::new('loadtest-worker', 'loadtest-worker', [CompletionResultType]::ParameterValue, 'Internal: one worker process of `radio loadtest` (reads its plan on stdin)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'radio;serve' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'Address to listen on, HOST:PORT: an IP address or a host name (every address it resolves to is bound, like 127.0.0.1 and ::1 for localhost); port 0 picks a free port (the bound address is logged)')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on, HOST:PORT: an IP address or a host name (every address it resolves to is bound, like 127.0.0.1 and ::1 for localhost); port 0 picks a free port (the bound address is logged)')
            [CompletionResult]::new('--metrics-listen', '--metrics-listen', [CompletionResultType]::ParameterName, 'Serve /metrics on this address (HOST:PORT, plain HTTP) instead of --listen''s, say on a private interface for the scraper alone; the main address then answers /metrics with 404')
            [CompletionResult]::new('--grace-period', '--grace-period', [CompletionResultType]::ParameterName, 'How long a station stays live after its broadcaster disconnects, waiting for it to resume with its token')
            [CompletionResult]::new('--max-message-bytes', '--max-message-bytes', [CompletionResultType]::ParameterName, 'Largest inbound WebSocket message; larger ones close the connection (1009)')
            [CompletionResult]::new('--keepalive-interval', '--keepalive-interval', [CompletionResultType]::ParameterName, 'How often the server checks each connection: a ping, unless it was written states since the last check and acknowledged them all')
            [CompletionResult]::new('--keepalive-timeout', '--keepalive-timeout', [CompletionResultType]::ParameterName, 'A connection silent for this long (no frame, no pong, no acknowledged state) is closed')
            [CompletionResult]::new('--write-timeout', '--write-timeout', [CompletionResultType]::ParameterName, 'A client that accepts no bytes for this long is closed (1008)')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Most concurrent connections, HTTP and WebSocket alike; more are answered 503 [default: 100000]. Given explicitly, the server warns at start when its open-files limit cannot hold that many')
            [CompletionResult]::new('--max-connections-per-ip', '--max-connections-per-ip', [CompletionResultType]::ParameterName, 'Most concurrent connections from one client address (0: no limit); more are answered 429. IPv6: per /64, and 4 and 16 times it per /56 and /48')
            [CompletionResult]::new('--max-stations', '--max-stations', [CompletionResultType]::ParameterName, 'Most stations live or in their grace period at once; beyond it `start_broadcasting` is refused (`unsupported`)')
            [CompletionResult]::new('--max-stations-per-ip', '--max-stations-per-ip', [CompletionResultType]::ParameterName, 'Most stations live or in their grace period that one client address (its /64 for IPv6) may hold at once (0: no limit); beyond it `start_broadcasting` is refused (`too_many_stations`). Stations the server runs (--station) do not count')
            [CompletionResult]::new('--claim-rate', '--claim-rate', [CompletionResultType]::ParameterName, '`start_broadcasting` requests one client address may send a minute, in bursts of that many (0: no limit); beyond it `rate_limited`. IPv6: per /64, and 4 and 16 times it per /56 and /48')
            [CompletionResult]::new('--max-list', '--max-list', [CompletionResultType]::ParameterName, 'Most stations in one `stations` answer (and GET /api/stations); the most listened are kept and the answer says `truncated`')
            [CompletionResult]::new('--list-rate', '--list-rate', [CompletionResultType]::ParameterName, '`list_stations` requests a connection may send per second (bursts up to twice that; 0: no limit beyond --rate-limit); beyond it `rate_limited`')
            [CompletionResult]::new('--allowed-origins', '--allowed-origins', [CompletionResultType]::ParameterName, 'Web origins besides the server''s own whose pages may open /ws and save sessions (comma-separated `scheme://host[:port]`; `*` for any)')
            [CompletionResult]::new('--allowed-hosts', '--allowed-hosts', [CompletionResultType]::ParameterName, 'Host names the server answers to besides IP addresses, localhost and the hosts of --allowed-origins (comma-separated; `*.example.com` for the names under it; `*` for any). A request for any other name (its Host header) is refused 421, against DNS rebinding: a server reached by a domain name needs it here')
            [CompletionResult]::new('--trusted-proxy', '--trusted-proxy', [CompletionResultType]::ParameterName, 'A proxy (address or CIDR block) whose X-Forwarded-For / Forwarded headers name the real client; repeat for several')
            [CompletionResult]::new('--rate-limit', '--rate-limit', [CompletionResultType]::ParameterName, 'Inbound messages a connection may send per second (bursts up to twice that); beyond it `rate_limited`, and a client that keeps on is closed (1008)')
            [CompletionResult]::new('--handshake-timeout', '--handshake-timeout', [CompletionResultType]::ParameterName, 'Time a client has to send its HTTP request and complete the WebSocket upgrade')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'On SIGINT/SIGTERM, how long to wait for connections to close before exiting')
            [CompletionResult]::new('--broadcast-key', '--broadcast-key', [CompletionResultType]::ParameterName, 'Require this key (at least 8 characters) in `start_broadcasting` (listeners need none). Prefer --broadcast-key-file: a key in argv is visible to every local user')
            [CompletionResult]::new('--broadcast-key-file', '--broadcast-key-file', [CompletionResultType]::ParameterName, 'Read the one broadcast key from this file''s first line (it wins over --broadcast-key, so a RADIO_BROADCAST_KEY left in the environment does not get in its way)')
            [CompletionResult]::new('--broadcast-keys', '--broadcast-keys', [CompletionResultType]::ParameterName, 'Per-station broadcast keys: lines `PATTERN KEY` (a station name or a glob like `team-*`; first match wins; keys of at least 8 characters); stations no line matches may not be broadcast. Read again on SIGHUP')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve https and wss with this certificate chain (PEM); needs --tls-key. Read again on SIGHUP')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'The private key (PEM) of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format')
            [CompletionResult]::new('--redis', '--redis', [CompletionResultType]::ParameterName, 'Join a cluster through this Redis server (redis://[user:password@]host:port/db, or rediss:// for TLS), or through the Sentinels that name its master (redis+sentinel://host:port,host:port/MASTER[/db], or rediss+sentinel://)')
            [CompletionResult]::new('--redis-ca-cert', '--redis-ca-cert', [CompletionResultType]::ParameterName, 'Cluster mode: trust this CA certificate (PEM) for a rediss:// Redis, or for the Sentinels and the master of a rediss+sentinel:// URL (default: the system''s roots)')
            [CompletionResult]::new('--redis-password-file', '--redis-password-file', [CompletionResultType]::ParameterName, 'Cluster mode: read the Redis password (through Sentinel, the master''s) from this file''s first line, so it is neither in argv nor in the environment (the --redis URL then carries none)')
            [CompletionResult]::new('--redis-sentinel-password-file', '--redis-sentinel-password-file', [CompletionResultType]::ParameterName, 'Cluster mode through Sentinel: read the Sentinels'' own password (their requirepass) from this file''s first line. The master''s password is the URL''s or --redis-password-file''s')
            [CompletionResult]::new('--node-id', '--node-id', [CompletionResultType]::ParameterName, 'This node''s id in the cluster (default: generated). Ids must be unique among the nodes sharing a Redis')
            [CompletionResult]::new('--lease', '--lease', [CompletionResultType]::ParameterName, 'Cluster mode: how long a station''s lease lasts without renewal. When a node dies, listeners elsewhere are told its stations went offline (reason "timeout") about this long after, unless the broadcaster resumed on another node first')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Directory of audio and video to serve (scanned recursively). Without it a small generated demo library is served')
            [CompletionResult]::new('--media', '--media', [CompletionResultType]::ParameterName, 'Directory of audio and video to serve (scanned recursively). Without it a small generated demo library is served')
            [CompletionResult]::new('--station', '--station', [CompletionResultType]::ParameterName, 'Run a station on the server itself, for ever: NAME=SOURCE[,shuffle], SOURCE an M3U playlist, a folder of the library (relative to --media) or `library` (all of it). Repeat for several; RADIO_STATIONS takes a list (commas or newlines). A broadcaster may take it over; it comes back to its SOURCE when the broadcaster stops. SIGHUP re-reads playlists. With --redis every node may name a station: one drives it at a time, and another takes over if it dies')
            [CompletionResult]::new('--rescan-interval', '--rescan-interval', [CompletionResultType]::ParameterName, 'Rescan the media library this often (it is also rescanned on SIGHUP)')
            [CompletionResult]::new('--follow-symlinks', '--follow-symlinks', [CompletionResultType]::ParameterName, 'Follow symbolic links in the media directory when scanning (true or false); only links whose real target lies under --media are ever followed. Either way a file swapped after the scan is not served until a rescan')
            [CompletionResult]::new('--loudness-cache', '--loudness-cache', [CompletionResultType]::ParameterName, 'File that keeps each track''s measured loudness across restarts, so a restart decodes nothing again (`off`: kept in memory only). By default $XDG_CACHE_HOME/radio/ (else ~/.cache/radio/), one file per --media; never in the library itself')
            [CompletionResult]::new('--media-base-url', '--media-base-url', [CompletionResultType]::ParameterName, 'Where players fetch the tracks: a CDN or object store that holds the library''s files under /media/ (or pulls them from this server), like https://cdn.example.com. The library''s track URLs, and so the web player and `radio listen --player mpv`, name it; this server still serves /media/ for the CDN to pull. See docs/cluster.md')
            [CompletionResult]::new('--session-ttl', '--session-ttl', [CompletionResultType]::ParameterName, 'Private player sessions idle this long are removed')
            [CompletionResult]::new('--session-sweep', '--session-sweep', [CompletionResultType]::ParameterName, 'How often idle sessions are swept')
            [CompletionResult]::new('--max-sessions', '--max-sessions', [CompletionResultType]::ParameterName, 'Most private sessions kept; the least recently used is evicted beyond it')
            [CompletionResult]::new('--session-rate', '--session-rate', [CompletionResultType]::ParameterName, 'New private sessions one client address may create per minute (0: no limit); more are answered 429. IPv6: per /64, and 4 and 16 times it per /56 and /48')
            [CompletionResult]::new('--stream-bitrate', '--stream-bitrate', [CompletionResultType]::ParameterName, 'Bitrate of each station''s MP3 stream (/stations/NAME/stream), kb/s: one of 32 40 48 56 64 80 96 112 128 160 192 224 256 320')
            [CompletionResult]::new('--stream-burst', '--stream-burst', [CompletionResultType]::ParameterName, 'The most audio a new stream listener is sent at once so its player starts at once (up to 10s; 0s still sends the newest fifth of a second, one chunk of frames); the stream is encoded this far ahead, so a seek or pause reaches stream listeners this late')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('--reuse-port', '--reuse-port', [CompletionResultType]::ParameterName, 'Share the listening port with other processes (SO_REUSEPORT)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;broadcast' {
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Station name (1-64 of A-Z a-z 0-9 . _ -)')
            [CompletionResult]::new('--station', '--station', [CompletionResultType]::ParameterName, 'Station name (1-64 of A-Z a-z 0-9 . _ -)')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'Trust this CA certificate (PEM) instead of the Mozilla roots, for the server''s wss:// and https:// (its library, its media; mpv too): for a server with a private CA or a self-signed certificate')
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'Broadcast key, when the server requires one')
            [CompletionResult]::new('--key', '--key', [CompletionResultType]::ParameterName, 'Broadcast key, when the server requires one')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'Read the broadcast key from this file (its first line), so that it is in neither argv, which every local user can read, nor the environment; it wins over --key')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Play this M3U playlist in order, looping. Each entry (a path relative to the playlist''s folder, or absolute) resolves to a library track; stdin still takes commands, and its end does not stop the station')
            [CompletionResult]::new('--playlist', '--playlist', [CompletionResultType]::ParameterName, 'Play this M3U playlist in order, looping. Each entry (a path relative to the playlist''s folder, or absolute) resolves to a library track; stdin still takes commands, and its end does not stop the station')
            [CompletionResult]::new('--heartbeat-interval', '--heartbeat-interval', [CompletionResultType]::ParameterName, 'How often to send a heartbeat while playing')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('--free-tracks', '--free-tracks', [CompletionResultType]::ParameterName, 'Send tracks as written instead of resolving them in the server''s library (for stations whose listeners play their own files); needed when the server has no library to read')
            [CompletionResult]::new('--stop-at-end', '--stop-at-end', [CompletionResultType]::ParameterName, 'At a track''s end, pause there instead of playing the next track')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print each state as one JSON line instead of a sentence')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;listen' {
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Station name (1-64 of A-Z a-z 0-9 . _ -)')
            [CompletionResult]::new('--station', '--station', [CompletionResultType]::ParameterName, 'Station name (1-64 of A-Z a-z 0-9 . _ -)')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'Trust this CA certificate (PEM) instead of the Mozilla roots, for the server''s wss:// and https:// (its library, its media; mpv too): for a server with a private CA or a self-signed certificate')
            [CompletionResult]::new('--player', '--player', [CompletionResultType]::ParameterName, 'Play the station''s sound through this player, kept on the station''s position (it must be installed: `apt-get install mpv`)')
            [CompletionResult]::new('--player-arg', '--player-arg', [CompletionResultType]::ParameterName, 'An argument for the player, repeatable: --player-arg=--volume=50, --player-arg=--ao=pulse. With --player-arg=--input-ipc-server=PATH the player''s control socket is that path instead of a private one. Keep the audio output real-time: a file output (--ao=pcm) runs ahead of the station; to record it, record a real-time output')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print every frame received as one JSON line (for scripts) instead of a status line; with --player, also a `player` line a second. Pongs are printed only with --verbose')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'With --json, also print the pongs of the clock''s pings')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'With --json, also print the pongs of the clock''s pings')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;loadtest' {
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'Server to load; repeat to spread listeners over several nodes')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Server to load; repeat to spread listeners over several nodes')
            [CompletionResult]::new('--listeners', '--listeners', [CompletionResultType]::ParameterName, 'Listeners to connect in total')
            [CompletionResult]::new('--stations', '--stations', [CompletionResultType]::ParameterName, 'Stations (one broadcaster each); listeners are spread evenly')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'How long to run once every listener is connected')
            [CompletionResult]::new('--update-interval', '--update-interval', [CompletionResultType]::ParameterName, 'Each broadcaster sends an `update` this often')
            [CompletionResult]::new('--heartbeat-interval', '--heartbeat-interval', [CompletionResultType]::ParameterName, 'Each broadcaster also sends a `heartbeat` this often (off by default)')
            [CompletionResult]::new('--connect-rate', '--connect-rate', [CompletionResultType]::ParameterName, 'New connections per second, over all workers (0: as fast as accepted)')
            [CompletionResult]::new('--churn', '--churn', [CompletionResultType]::ParameterName, 'Once every listener is connected, replace this many a minute (one disconnect and one connect each), like `1000/min` or `20/s`')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Worker processes, or `auto` (one per 15,000 connections)')
            [CompletionResult]::new('--source-addrs', '--source-addrs', [CompletionResultType]::ParameterName, 'Local addresses to bind client sockets to: a range `A-B` or a list `A,B` (default for a loopback target: 127.0.0.1 onward, as many as needed)')
            [CompletionResult]::new('--station-prefix', '--station-prefix', [CompletionResultType]::ParameterName, 'Prefix of the station names used')
            [CompletionResult]::new('--listen-only', '--listen-only', [CompletionResultType]::ParameterName, 'Play no broadcaster: tune the listeners to these stations, which already play (a server-run station, `radio serve --station`), and measure the states the server publishes. Repeat, or list them: a,b')
            [CompletionResult]::new('--key', '--key', [CompletionResultType]::ParameterName, 'Broadcast key, when the server requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Write the report as JSON to this file')
            [CompletionResult]::new('--max-p99', '--max-p99', [CompletionResultType]::ParameterName, 'Fail (exit 1) when fan-out p99 exceeds this')
            [CompletionResult]::new('--min-delivery', '--min-delivery', [CompletionResultType]::ParameterName, 'Fail (exit 1) when final-state delivery is below this percentage')
            [CompletionResult]::new('--server-pid', '--server-pid', [CompletionResultType]::ParameterName, 'Measure this server process''s memory and CPU (repeat for several, or list them: 12,34)')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'Trust this CA certificate (PEM) instead of the Mozilla roots, for a wss:// server with a private CA or a self-signed certificate (the listeners, broadcasters and observers all use it)')
            [CompletionResult]::new('--fetch-media', '--fetch-media', [CompletionResultType]::ParameterName, 'Each listener also fetches its media as the web player does: the track it is told at tune-in and each change (`Range: bytes=0-`), and with `prefetch` (the default) the announced next track ahead of its start. Reports bytes per listener, time from a track''s start to holding its first 256 KiB, and requests refused')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('--reconnect', '--reconnect', [CompletionResultType]::ParameterName, 'On a lost connection, listeners connect again to the next --url and broadcasters resume their station there, with the clients'' backoff; the report counts reconnects. SIGUSR1 marks a moment (a fault): the report says how long until every listener held the newest state again')
            [CompletionResult]::new('--stream', '--stream', [CompletionResultType]::ParameterName, 'Read HTTP audio streams instead of holding WebSocket listeners: each of --listeners reads a stream, measuring the time to its first audio byte, its bytes a second, its stalls (over 1 s without a byte) and the audio lost against the stream''s bitrate. With --listen-only STATION it reads URL/stations/STATION/stream; without, each --url is a stream itself (an Icecast mount, say)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;completions' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;man' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;loadtest-worker' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'radio;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the server: the WebSocket sync protocol at /ws, the media library, the web player at /, health and metrics')
            [CompletionResult]::new('broadcast', 'broadcast', [CompletionResultType]::ParameterValue, 'Run a station of the server''s library from a shell: commands on stdin, or a playlist')
            [CompletionResult]::new('listen', 'listen', [CompletionResultType]::ParameterValue, 'Tune in from a terminal and show what plays and how well it is in sync; with --player mpv, hear it')
            [CompletionResult]::new('loadtest', 'loadtest', [CompletionResultType]::ParameterValue, 'Generate load against one or more servers and report fan-out latency, delivery and server cost')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Show the man page of radio (or of one subcommand): through man on a terminal, its roff source to a file or a pipe')
            [CompletionResult]::new('loadtest-worker', 'loadtest-worker', [CompletionResultType]::ParameterValue, 'Internal: one worker process of `radio loadtest` (reads its plan on stdin)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'radio;help;serve' {
            break
        }
        'radio;help;broadcast' {
            break
        }
        'radio;help;listen' {
            break
        }
        'radio;help;loadtest' {
            break
        }
        'radio;help;completions' {
            break
        }
        'radio;help;man' {
            break
        }
        'radio;help;loadtest-worker' {
            break
        }
        'radio;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
