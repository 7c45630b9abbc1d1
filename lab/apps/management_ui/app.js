// kaliko/management-ui page: draws the Stars graph in SVG from the server's SSE stream.
//
// Owns the drawing only. The server decides what is visible and which edges exist (`graph.py`);
// this script lays the configured services out on a circle (stable slots, so a node does not
// move when another one hides), draws one curved arrow per edge (bold and animated when
// reachable, faint when blocked) and fills the side panel from the `cluster` event.
// Test hooks: `g.node[data-service]`, `path.edge[data-from][data-to][data-reachable]`,
// `body[data-graph-updates]` (count of graph events drawn).
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#487f9f", "#53b464", "#593da9", "#f08e4e", "#f35d6b", "#6ec654"];
  const CENTER = 300;
  const ORBIT = 190;
  const NODE_RADIUS = 44;

  const state = { graph: null, cluster: null, updates: 0 };

  function svg(name, attrs, parent) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
    if (parent) parent.appendChild(element);
    return element;
  }

  function html(name, attrs, parent, text) {
    const element = document.createElement(name);
    for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
    if (text !== undefined) element.textContent = text;
    if (parent) parent.appendChild(element);
    return element;
  }

  function colorOf(index) {
    return PALETTE[index % PALETTE.length];
  }

  function slots(nodes) {
    const result = {};
    nodes.forEach((node, index) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * index) / Math.max(nodes.length, 1);
      result[node.id] = {
        x: CENTER + ORBIT * Math.cos(angle),
        y: CENTER + ORBIT * Math.sin(angle),
        color: colorOf(index),
      };
    });
    return result;
  }

  // A quadratic curve bent to the left of p1->p2 (as star-collect does), so that A->B and B->A
  // are two separate arcs; both ends are pulled back to the node's rim, the head a bit more.
  function curve(p1, p2) {
    const dx = p2.x - p1.x;
    const dy = p2.y - p1.y;
    const length = Math.hypot(dx, dy) || 1;
    const control = {
      x: p1.x + dx / 2 - (dy / length) * length * 0.25,
      y: p1.y + dy / 2 + (dx / length) * length * 0.25,
    };
    const rim = (p, distance) => {
      const vx = control.x - p.x;
      const vy = control.y - p.y;
      const norm = Math.hypot(vx, vy) || 1;
      return { x: p.x + (vx / norm) * distance, y: p.y + (vy / norm) * distance };
    };
    const start = rim(p1, NODE_RADIUS + 2);
    const end = rim(p2, NODE_RADIUS + 22);
    const f = (n) => n.toFixed(1);
    return `M ${f(start.x)} ${f(start.y)} Q ${f(control.x)} ${f(control.y)} ${f(end.x)} ${f(end.y)}`;
  }

  function drawMarkers(defs) {
    defs.replaceChildren();
    PALETTE.forEach((color, index) => {
      const marker = svg("marker", {
        id: `arrow-${index}`, viewBox: "0 0 10 10", refX: 1, refY: 5,
        markerWidth: 22, markerHeight: 22, markerUnits: "userSpaceOnUse", orient: "auto",
      }, defs);
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color }, marker);
    });
  }

  function drawGraph() {
    const root = document.getElementById("graph");
    const edgeLayer = document.getElementById("edges");
    const nodeLayer = document.getElementById("nodes");
    edgeLayer.replaceChildren();
    nodeLayer.replaceChildren();
    const graph = state.graph;
    const place = slots(graph.nodes);
    const paletteIndex = Object.fromEntries(graph.nodes.map((node, index) => [node.id, index % PALETTE.length]));
    const visible = graph.nodes.filter((node) => node.visible);
    root.classList.toggle("no-nodes", visible.length === 0);

    for (const edge of graph.edges) {
      const from = place[edge.from];
      const to = place[edge.to];
      const d = curve(from, to);
      const path = svg("path", {
        class: `edge ${edge.reachable ? "reachable" : "blocked"}`,
        d, stroke: from.color, "marker-end": `url(#arrow-${paletteIndex[edge.from]})`,
        "data-from": edge.from, "data-to": edge.to, "data-reachable": edge.reachable ? "true" : "false",
      }, edgeLayer);
      svg("title", {}, path).textContent = `${edge.from} → ${edge.to}: ${edge.reachable ? "reachable" : "blocked"}`;
      if (edge.reachable) {
        const ball = svg("circle", { class: "ball", r: 7 }, edgeLayer);
        svg("animateMotion", { dur: "1.6s", repeatCount: "indefinite", path: d }, ball);
      }
    }
    for (const node of visible) {
      const at = place[node.id];
      const group = svg("g", {
        class: "node", "data-service": node.id, transform: `translate(${at.x.toFixed(1)} ${at.y.toFixed(1)})`,
      }, nodeLayer);
      svg("circle", { r: NODE_RADIUS, fill: at.color }, group);
      svg("text", { class: "label" }, group).textContent = node.id;
      svg("text", { class: "caption", y: NODE_RADIUS + 22 }, group).textContent = node.name || "";
      svg("title", {}, group).textContent = `${node.id}: ${node.name || node.url}`;
    }
  }

  function drawServices() {
    const list = document.getElementById("services");
    list.replaceChildren();
    state.graph.nodes.forEach((node, index) => {
      const item = html("li", { "data-node-status": node.id, "data-visible": node.visible }, list);
      html("span", { class: "badge", style: `background:${colorOf(index)}` }, item, node.id);
      html("span", {}, item, node.name || new URL(node.url).host);
      html("span", { class: "why" }, item, node.visible ? "visible" : `hidden: ${node.error || "unreachable"}`);
    });
    const body = document.querySelector("#connections tbody");
    body.replaceChildren();
    for (const edge of state.graph.edges) {
      const row = html("tr", { "data-from": edge.from, "data-to": edge.to }, body);
      html("td", {}, row, edge.from);
      html("td", {}, row, edge.to);
      html("td", { class: edge.reachable ? "state-ok" : "state-bad" }, row, edge.reachable ? "reachable" : "blocked");
    }
  }

  function seconds(value) {
    if (value === null || value === undefined) return "—";
    return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
  }

  function drawCluster() {
    const cluster = state.cluster;
    const steps = document.querySelector("#steps tbody");
    steps.replaceChildren();
    for (const step of cluster.steps) {
      const current = step.step === cluster.current_step;
      const row = html("tr", { "data-step": step.step, class: current ? "current" : "" }, steps);
      html("td", {}, row, step.step);
      html("td", { class: "num", "data-converged": step.converged_seconds ?? "" }, row, seconds(step.converged_seconds));
    }
    document.getElementById("steps-empty").hidden = cluster.steps.length > 0;
    const nodes = document.querySelector("#cluster-nodes tbody");
    nodes.replaceChildren();
    for (const node of cluster.nodes) {
      const row = html("tr", { "data-node": node.name, "data-ready": node.ready }, nodes);
      html("td", {}, row, node.name);
      const ready = html("td", {}, row);
      html("span", { class: `dot ${node.ready ? "ok" : "bad"}` }, ready);
      ready.append(node.ready ? "ready" : "not ready");
      html("td", { class: "num" }, row, node.revision ?? "—");
    }
    document.getElementById("nodes-empty").hidden = cluster.nodes.length > 0;
  }

  function stamp() {
    document.getElementById("updated").textContent = `last update ${new Date().toLocaleTimeString()}`;
  }

  function setConnection(live) {
    const pill = document.getElementById("conn");
    pill.dataset.state = live ? "live" : "reconnecting";
    pill.textContent = live ? "live" : "reconnecting…";
  }

  function connect() {
    const events = new EventSource("/events");
    events.addEventListener("open", () => setConnection(true));
    events.addEventListener("error", () => setConnection(false));
    events.addEventListener("graph", (event) => {
      state.graph = JSON.parse(event.data);
      drawGraph();
      drawServices();
      state.updates += 1;
      document.body.dataset.graphUpdates = String(state.updates);
      stamp();
    });
    events.addEventListener("cluster", (event) => {
      state.cluster = JSON.parse(event.data);
      drawCluster();
      stamp();
    });
  }

  function setUpToggle() {
    const button = document.getElementById("toggle-blocked");
    button.addEventListener("click", () => {
      const hide = document.getElementById("graph").classList.toggle("hide-blocked");
      button.setAttribute("aria-pressed", String(!hide));
      button.textContent = hide ? "Show blocked" : "Hide blocked";
    });
  }

  drawMarkers(document.getElementById("markers"));
  setUpToggle();
  connect();
})();
