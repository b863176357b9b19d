"""`rr-service api`: the seeds' HTTP API on port 8770, and a dashboard, both served from live projections.

Endpoints (JSON unless said otherwise; every error is 4xx/5xx with {"error": reason, "success": false}):

    GET  /status        the same document as `rr status --json`: leader_id, alive_peers, nodes, role,
                        node_id, leaders (per role, with epoch), work, models, data, elo, anomalies
    GET  /health        {"status": "ok", node_id, uptime_s, nats_connected, caught_up, last_seq,
                        log_end_seq, snapshot_seq, events_folded, loop_lag_s, loop_lag_max_s};
                        503 with status "nats_disconnected" or "catching_up"
    GET  /peers         {leader_id, alive_peers, total, peers: [the nodes of /status]}
    GET  /work/status   {counts, total, by_node, by_config, items (newest change first), items_matching,
                        last_seq}; ?status=pending|assigned|running|completed|failed|cancelled, ?limit=N
    POST /work/add      body as the seeds': {"work_type": "selfplay", "board_type": "hex8",
                        "num_players": 2, "num_games": 1000} (+ priority, target_node, params);
                        200 {"success": true, "work_id": "w-…", "seq": N, "status": "pending"} once the
                        WORK_ADDED is in the log (and folded, so a GET right after lists it);
                        400 naming the field; 413 over api.max_body_bytes; 503 when NATS is down
                        ("nothing was added") or the ack did not come ("not confirmed", with work_id)
    GET  /work/for-node/{node_id}, POST /work/claim, /work/complete, /work/fail (bearer token):
                        HTTP-only nodes take and report work (services/api/nodework.py)
    GET  /election/status, /lease/status, /gossip/peers; GET /admin/config (admin token)
    GET  /metrics       the fleet's vital signs, Prometheus text format (services/api/metrics.py)
    GET  /api/events    ?after=SEQ: {events: [{seq, type, about, source, ts, epoch, text, subject}],
                        last_seq, oldest_seq}, from a ring of the latest api.recent_events
    GET  /api/elo       {configs: {config: [{seq, at, model_id, elo, opponent, games, win_rate}]}, promoted}
    GET  /api/stream    server-sent events: an EventsDoc per batch of newly folded events (?after=, Last-Event-ID)
    GET  /openapi.json  the contract, generated from the handlers' types (services/api/app.py)
    GET  /              the dashboard (static/: HTML, JS, CSS; no build step, nothing from the network)

Until the history that existed at start is folded, the data endpoints answer 503 with Retry-After.
The service listens on api.host (127.0.0.1 by default: POST /work/add needs no token until
api.tokens_file is set) and
api.port (8770), or RR_API_PORT (`rr up --api-port`, `rr-service api --api-port`).
"""
