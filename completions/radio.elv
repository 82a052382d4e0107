
use builtin;
use str;

set edit:completion:arg-completer[radio] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'radio'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'radio'= {
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the server: the WebSocket sync protocol at /ws, the media library, the web player at /, health and metrics'
            cand broadcast 'Run a station of the server''s library from a shell: commands on stdin, or a playlist'
            cand listen 'Tune in from a terminal and show what plays and how well it is in sync; with --player mpv, hear it'
            cand loadtest 'Generate load against one or more servers and report fan-out latency, delivery and server cost'
            cand completions 'Print a shell completion script to stdout'
            cand man 'Show the man page of radio (or of one subcommand): through man on a terminal, its roff source to a file or a pipe'
            cand loadtest-worker 'Internal: one worker process of `radio loadtest` (reads its plan on stdin)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'radio;serve'= {
            cand -l 'Address to listen on, HOST:PORT: an IP address or a host name (every address it resolves to is bound, like 127.0.0.1 and ::1 for localhost); port 0 picks a free port (the bound address is logged)'
            cand --listen 'Address to listen on, HOST:PORT: an IP address or a host name (every address it resolves to is bound, like 127.0.0.1 and ::1 for localhost); port 0 picks a free port (the bound address is logged)'
            cand --metrics-listen 'Serve /metrics on this address (HOST:PORT, plain HTTP) instead of --listen''s, say on a private interface for the scraper alone; the main address then answers /metrics with 404'
            cand --grace-period 'How long a station stays live after its broadcaster disconnects, waiting for it to resume with its token'
            cand --max-message-bytes 'Largest inbound WebSocket message; larger ones close the connection (1009)'
            cand --keepalive-interval 'How often the server checks each connection: a ping, unless it was written states since the last check and acknowledged them all'
            cand --keepalive-timeout 'A connection silent for this long (no frame, no pong, no acknowledged state) is closed'
            cand --write-timeout 'A client that accepts no bytes for this long is closed (1008)'
            cand --max-connections 'Most concurrent connections, HTTP and WebSocket alike; more are answered 503 [default: 100000]. Given explicitly, the server warns at start when its open-files limit cannot hold that many'
            cand --max-connections-per-ip 'Most concurrent connections from one client address (0: no limit); more are answered 429. IPv6: per /64, and 4 and 16 times it per /56 and /48'
            cand --max-stations 'Most stations live or in their grace period at once; beyond it `start_broadcasting` is refused (`unsupported`)'
            cand --max-stations-per-ip 'Most stations live or in their grace period that one client address (its /64 for IPv6) may hold at once (0: no limit); beyond it `start_broadcasting` is refused (`too_many_stations`). Stations the server runs (--station) do not count'
            cand --claim-rate '`start_broadcasting` requests one client address may send a minute, in bursts of that many (0: no limit); beyond it `rate_limited`. IPv6: per /64, and 4 and 16 times it per /56 and /48'
            cand --max-list 'Most stations in one `stations` answer (and GET /api/stations); the most listened are kept and the answer says `truncated`'
            cand --list-rate '`list_stations` requests a connection may send per second (bursts up to twice that; 0: no limit beyond --rate-limit); beyond it `rate_limited`'
            cand --allowed-origins 'Web origins besides the server''s own whose pages may open /ws and save sessions (comma-separated `scheme://host[:port]`; `*` for any)'
            cand --allowed-hosts 'Host names the server answers to besides IP addresses, localhost and the hosts of --allowed-origins (comma-separated; `*.example.com` for the names under it; `*` for any). A request for any other name (its Host header) is refused 421, against DNS rebinding: a server reached by a domain name needs it here'
            cand --trusted-proxy 'A proxy (address or CIDR block) whose X-Forwarded-For / Forwarded headers name the real client; repeat for several'
            cand --rate-limit 'Inbound messages a connection may send per second (bursts up to twice that); beyond it `rate_limited`, and a client that keeps on is closed (1008)'
            cand --handshake-timeout 'Time a client has to send its HTTP request and complete the WebSocket upgrade'
            cand --shutdown-timeout 'On SIGINT/SIGTERM, how long to wait for connections to close before exiting'
            cand --broadcast-key 'Require this key (at least 8 characters) in `start_broadcasting` (listeners need none). Prefer --broadcast-key-file: a key in argv is visible to every local user'
            cand --broadcast-key-file 'Read the one broadcast key from this file''s first line (it wins over --broadcast-key, so a RADIO_BROADCAST_KEY left in the environment does not get in its way)'
            cand --broadcast-keys 'Per-station broadcast keys: lines `PATTERN KEY` (a station name or a glob like `team-*`; first match wins; keys of at least 8 characters); stations no line matches may not be broadcast. Read again on SIGHUP'
            cand --tls-cert 'Serve https and wss with this certificate chain (PEM); needs --tls-key. Read again on SIGHUP'
            cand --tls-key 'The private key (PEM) of --tls-cert'
            cand --log-format 'Log format'
            cand --redis 'Join a cluster through this Redis server (redis://[user:password@]host:port/db, or rediss:// for TLS), or through the Sentinels that name its master (redis+sentinel://host:port,host:port/MASTER[/db], or rediss+sentinel://)'
            cand --redis-ca-cert 'Cluster mode: trust this CA certificate (PEM) for a rediss:// Redis, or for the Sentinels and the master of a rediss+sentinel:// URL (default: the system''s roots)'
            cand --redis-password-file 'Cluster mode: read the Redis password (through Sentinel, the master''s) from this file''s first line, so it is neither in argv nor in the environment (the --redis URL then carries none)'
            cand --redis-sentinel-password-file 'Cluster mode through Sentinel: read the Sentinels'' own password (their requirepass) from this file''s first line. The master''s password is the URL''s or --redis-password-file''s'
            cand --node-id 'This node''s id in the cluster (default: generated). Ids must be unique among the nodes sharing a Redis'
            cand --lease 'Cluster mode: how long a station''s lease lasts without renewal. When a node dies, listeners elsewhere are told its stations went offline (reason "timeout") about this long after, unless the broadcaster resumed on another node first'
            cand -m 'Directory of audio and video to serve (scanned recursively). Without it a small generated demo library is served'
            cand --media 'Directory of audio and video to serve (scanned recursively). Without it a small generated demo library is served'
            cand --station 'Run a station on the server itself, for ever: NAME=SOURCE[,shuffle], SOURCE an M3U playlist, a folder of the library (relative to --media) or `library` (all of it). Repeat for several; RADIO_STATIONS takes a list (commas or newlines). A broadcaster may take it over; it comes back to its SOURCE when the broadcaster stops. SIGHUP re-reads playlists. With --redis every node may name a station: one drives it at a time, and another takes over if it dies'
            cand --rescan-interval 'Rescan the media library this often (it is also rescanned on SIGHUP)'
            cand --follow-symlinks 'Follow symbolic links in the media directory when scanning (true or false); only links whose real target lies under --media are ever followed. Either way a file swapped after the scan is not served until a rescan'
            cand --loudness-cache 'File that keeps each track''s measured loudness across restarts, so a restart decodes nothing again (`off`: kept in memory only). By default $XDG_CACHE_HOME/radio/ (else ~/.cache/radio/), one file per --media; never in the library itself'
            cand --media-base-url 'Where players fetch the tracks: a CDN or object store that holds the library''s files under /media/ (or pulls them from this server), like https://cdn.example.com. The library''s track URLs, and so the web player and `radio listen --player mpv`, name it; this server still serves /media/ for the CDN to pull. See docs/cluster.md'
            cand --session-ttl 'Private player sessions idle this long are removed'
            cand --session-sweep 'How often idle sessions are swept'
            cand --max-sessions 'Most private sessions kept; the least recently used is evicted beyond it'
            cand --session-rate 'New private sessions one client address may create per minute (0: no limit); more are answered 429. IPv6: per /64, and 4 and 16 times it per /56 and /48'
            cand --stream-bitrate 'Bitrate of each station''s MP3 stream (/stations/NAME/stream), kb/s: one of 32 40 48 56 64 80 96 112 128 160 192 224 256 320'
            cand --stream-burst 'The most audio a new stream listener is sent at once so its player starts at once (up to 10s; 0s still sends the newest fifth of a second, one chunk of frames); the stream is encoded this far ahead, so a seek or pause reaches stream listeners this late'
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand --reuse-port 'Share the listening port with other processes (SO_REUSEPORT)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;broadcast'= {
            cand -u 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next'
            cand --url 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next'
            cand -s 'Station name (1-64 of A-Z a-z 0-9 . _ -)'
            cand --station 'Station name (1-64 of A-Z a-z 0-9 . _ -)'
            cand --ca-cert 'Trust this CA certificate (PEM) instead of the Mozilla roots, for the server''s wss:// and https:// (its library, its media; mpv too): for a server with a private CA or a self-signed certificate'
            cand -k 'Broadcast key, when the server requires one'
            cand --key 'Broadcast key, when the server requires one'
            cand --key-file 'Read the broadcast key from this file (its first line), so that it is in neither argv, which every local user can read, nor the environment; it wins over --key'
            cand -p 'Play this M3U playlist in order, looping. Each entry (a path relative to the playlist''s folder, or absolute) resolves to a library track; stdin still takes commands, and its end does not stop the station'
            cand --playlist 'Play this M3U playlist in order, looping. Each entry (a path relative to the playlist''s folder, or absolute) resolves to a library track; stdin still takes commands, and its end does not stop the station'
            cand --heartbeat-interval 'How often to send a heartbeat while playing'
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand --free-tracks 'Send tracks as written instead of resolving them in the server''s library (for stations whose listeners play their own files); needed when the server has no library to read'
            cand --stop-at-end 'At a track''s end, pause there instead of playing the next track'
            cand --json 'Print each state as one JSON line instead of a sentence'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;listen'= {
            cand -u 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next'
            cand --url 'Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing). Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next'
            cand -s 'Station name (1-64 of A-Z a-z 0-9 . _ -)'
            cand --station 'Station name (1-64 of A-Z a-z 0-9 . _ -)'
            cand --ca-cert 'Trust this CA certificate (PEM) instead of the Mozilla roots, for the server''s wss:// and https:// (its library, its media; mpv too): for a server with a private CA or a self-signed certificate'
            cand --player 'Play the station''s sound through this player, kept on the station''s position (it must be installed: `apt-get install mpv`)'
            cand --player-arg 'An argument for the player, repeatable: --player-arg=--volume=50, --player-arg=--ao=pulse. With --player-arg=--input-ipc-server=PATH the player''s control socket is that path instead of a private one. Keep the audio output real-time: a file output (--ao=pcm) runs ahead of the station; to record it, record a real-time output'
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand --json 'Print every frame received as one JSON line (for scripts) instead of a status line; with --player, also a `player` line a second. Pongs are printed only with --verbose'
            cand -v 'With --json, also print the pongs of the clock''s pings'
            cand --verbose 'With --json, also print the pongs of the clock''s pings'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;loadtest'= {
            cand -u 'Server to load; repeat to spread listeners over several nodes'
            cand --url 'Server to load; repeat to spread listeners over several nodes'
            cand --listeners 'Listeners to connect in total'
            cand --stations 'Stations (one broadcaster each); listeners are spread evenly'
            cand --duration 'How long to run once every listener is connected'
            cand --update-interval 'Each broadcaster sends an `update` this often'
            cand --heartbeat-interval 'Each broadcaster also sends a `heartbeat` this often (off by default)'
            cand --connect-rate 'New connections per second, over all workers (0: as fast as accepted)'
            cand --churn 'Once every listener is connected, replace this many a minute (one disconnect and one connect each), like `1000/min` or `20/s`'
            cand --workers 'Worker processes, or `auto` (one per 15,000 connections)'
            cand --source-addrs 'Local addresses to bind client sockets to: a range `A-B` or a list `A,B` (default for a loopback target: 127.0.0.1 onward, as many as needed)'
            cand --station-prefix 'Prefix of the station names used'
            cand --listen-only 'Play no broadcaster: tune the listeners to these stations, which already play (a server-run station, `radio serve --station`), and measure the states the server publishes. Repeat, or list them: a,b'
            cand --key 'Broadcast key, when the server requires one'
            cand --json 'Write the report as JSON to this file'
            cand --max-p99 'Fail (exit 1) when fan-out p99 exceeds this'
            cand --min-delivery 'Fail (exit 1) when final-state delivery is below this percentage'
            cand --server-pid 'Measure this server process''s memory and CPU (repeat for several, or list them: 12,34)'
            cand --ca-cert 'Trust this CA certificate (PEM) instead of the Mozilla roots, for a wss:// server with a private CA or a self-signed certificate (the listeners, broadcasters and observers all use it)'
            cand --fetch-media 'Each listener also fetches its media as the web player does: the track it is told at tune-in and each change (`Range: bytes=0-`), and with `prefetch` (the default) the announced next track ahead of its start. Reports bytes per listener, time from a track''s start to holding its first 256 KiB, and requests refused'
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand --reconnect 'On a lost connection, listeners connect again to the next --url and broadcasters resume their station there, with the clients'' backoff; the report counts reconnects. SIGUSR1 marks a moment (a fault): the report says how long until every listener held the newest state again'
            cand --stream 'Read HTTP audio streams instead of holding WebSocket listeners: each of --listeners reads a stream, measuring the time to its first audio byte, its bytes a second, its stalls (over 1 s without a byte) and the audio lost against the stream''s bitrate. With --listen-only STATION it reads URL/stations/STATION/stream; without, each --url is a stream itself (an Icecast mount, say)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;completions'= {
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;man'= {
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;loadtest-worker'= {
            cand --color 'Colour in logs and messages: auto (when writing to a terminal and NO_COLOR is not set), always or never'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'radio;help'= {
            cand serve 'Run the server: the WebSocket sync protocol at /ws, the media library, the web player at /, health and metrics'
            cand broadcast 'Run a station of the server''s library from a shell: commands on stdin, or a playlist'
            cand listen 'Tune in from a terminal and show what plays and how well it is in sync; with --player mpv, hear it'
            cand loadtest 'Generate load against one or more servers and report fan-out latency, delivery and server cost'
            cand completions 'Print a shell completion script to stdout'
            cand man 'Show the man page of radio (or of one subcommand): through man on a terminal, its roff source to a file or a pipe'
            cand loadtest-worker 'Internal: one worker process of `radio loadtest` (reads its plan on stdin)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'radio;help;serve'= {
        }
        &'radio;help;broadcast'= {
        }
        &'radio;help;listen'= {
        }
        &'radio;help;loadtest'= {
        }
        &'radio;help;completions'= {
        }
        &'radio;help;man'= {
        }
        &'radio;help;loadtest-worker'= {
        }
        &'radio;help;help'= {
        }
    ]
    $completions[$command]
}
