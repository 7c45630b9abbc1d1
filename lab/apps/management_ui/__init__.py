"""kaliko/management-ui: Calico's star-collect for the lab, a live Stars graph with a cluster panel.

Owns the UI image: `graph` (the pure graph rule), `hub` (latest-value fan-out), `cluster` (the
demo runner's reports), `server` (poll loop and aiohttp routes), `client` (the push helper the
demo runner uses) and the page (`index.html`, `app.js`, `style.css`: vanilla JS and SVG, no CDN).
Run it with `python -m lab.apps.management_ui --port 9001 --targets F=http://frontend.stars:80/status,...`.

HTTP surface: `GET /` page; `GET /api/graph` {"nodes": [{"id","url","visible","name","error"}],
"edges": [{"from","to","reachable"}]}; `GET|POST /api/cluster`; `GET /events` SSE with events
`graph` and `cluster` carrying those same documents.
"""
