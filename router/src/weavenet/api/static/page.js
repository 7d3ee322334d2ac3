// The live page: every few seconds, the data (JSON) and the picture (an <img>: no script in it runs) again.
// Everything from the router is put in with textContent, never as HTML: nicknames come from other hosts.
"use strict";
const REFRESH_MS = 3000;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows, each) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const r of rows) {
    const tr = body.insertRow();
    each(tr, r);
  }
}

function who(name, nick) { return nick ? `${nick} (${name})` : name; }
function ms(v) { return v === null || v === undefined ? "-" : `${v.toFixed(2)} ms`; }

async function refresh() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch("/ui/data", { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) throw new Error(resp.status === 401 ? "session expired: run 'weave ui' again" : `HTTP ${resp.status}`);
    const d = await resp.json();
    document.getElementById("router").textContent = who(d.name, d.nickname);
    const bad = d.links.filter((l) => l.state !== "ok").length;
    document.getElementById("links-summary").textContent = `(${d.links.length}, ${bad} unhealthy)`;
    fill("links", d.links, (tr, l) => {
      if (l.state !== "ok") tr.className = "bad";
      tr.dataset.state = l.state;
      cell(tr, l.state === "ok" ? "" : "!!", "mark");
      cell(tr, who(l.a, l.a_nick)); cell(tr, who(l.b, l.b_nick)); cell(tr, l.state); cell(tr, l.text);
    });
    fill("peers", d.peers, (tr, p) => {
      if (!p.healthy) tr.className = "bad";
      cell(tr, p.healthy ? "" : "!!", "mark");
      cell(tr, who(p.name, p.nickname));
      cell(tr, `${p.state}${p.problems.length ? " [" + p.problems.join("; ") + "]" : ""}`);
      cell(tr, p.datapath === "relayed" ? `relayed via ${p.via}` : p.datapath);
      cell(tr, p.encrypted === null ? "-" : p.encrypted ? "yes" : "no");
      cell(tr, p.rtt_ms === null ? "-" : `${ms(p.rtt_ms)} / ${ms(p.rtt_max_ms)}`);
      cell(tr, p.heartbeat_loss === null ? "-" : `${(p.heartbeat_loss * 100).toFixed(0)} %`);
      cell(tr, p.reconnects); cell(tr, p.fallbacks);
      cell(tr, p.last_failure ? `${p.last_failure} (${p.last_failure_s_ago} s ago)` : "");
    });
    fill("nodes", d.nodes, (tr, n) => {
      tr.dataset.name = n.name;
      cell(tr, who(n.name, n.nickname) + (n.ours ? " (this host)" : ""));
      cell(tr, n.address || "-"); cell(tr, n.containers);
    });
    fill("containers", d.containers, (tr, c) => {
      cell(tr, c.id); cell(tr, c.name); cell(tr, c.cidrs.join(" ") + (c.running ? "" : " (stopped)"));
    });
    document.getElementById("subnets").textContent = d.subnets.length ? `(subnets: ${d.subnets.join(", ")})` : "";
    document.getElementById("topology").src = `/ui/topology.svg?at=${Date.now()}`;
    status.className = "";
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.className = "error";
    status.textContent = `cannot refresh: ${e.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
