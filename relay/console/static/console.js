// The console's progressive layer: the queue chart (refreshed every 5 s without reloading), the
// block-file upload (progress, bad lines listed) and the confirmation before deleting complaints.
// Every page works without it except the chart and the upload.

const REFRESH_MS = 5000;

function chart(el) {
  const state = document.getElementById("chart-state");
  let plot = null;
  async function load() {
    try {
      const r = await fetch(el.dataset.src, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      const body = await r.json();
      if (!r.ok) throw new Error(body.message || `HTTP ${r.status}`);
      const pts = body.series;  // [time, in, try, out] every 5 s
      const data = [pts.map((p) => p[0]), pts.map((p) => p[1]), pts.map((p) => p[2]), pts.map((p) => p[3])];
      el.dataset.points = String(pts.length);
      el.dataset.last = pts.length ? pts[pts.length - 1].join(",") : "";
      const pending = document.querySelector(`tr.chosen [data-field=pending]`);
      if (pending) pending.textContent = body.queue.pending;
      if (plot === null) {
        plot = new uPlot({
          width: Math.max(300, el.clientWidth), height: 260,
          series: [{}, { label: "In", stroke: "#1f5fbf" }, { label: "Try", stroke: "#c77700" }, { label: "Out", stroke: "#1e7a3c" }],
          // ticks on whole 5 s slots, at least 90 px apart, as 24 h clock times
          axes: [{ space: 90, incrs: [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600],
                   values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false })) },
                 { label: "messages / s" }],
        }, data, el);
        new ResizeObserver(() => plot.setSize({ width: Math.max(300, el.clientWidth), height: 260 })).observe(el);
      } else {
        plot.setData(data);
      }
      state.textContent = pts.length ? `Updated ${new Date().toLocaleTimeString()}; refreshes every 5 s.`
        : "No traffic in the last hour yet; the chart fills in as mail moves. Refreshes every 5 s.";
    } catch (e) {
      state.textContent = `The chart could not be refreshed (${e.message}); trying again in 5 s.`;
    }
  }
  load();
  setInterval(load, REFRESH_MS);
}

function upload(form) {
  const out = document.getElementById("u-result");
  const bar = document.getElementById("u-progress");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) { out.textContent = "Choose a file first."; return; }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.action);
    xhr.setRequestHeader("Content-Type", "text/csv");
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false; bar.value = 0;
    out.textContent = "Uploading…";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
    xhr.onerror = () => { out.textContent = "The upload failed: the server could not be reached."; };
    xhr.onload = () => {
      bar.value = 100;
      let body;
      try { body = JSON.parse(xhr.responseText); } catch { body = { message: `HTTP ${xhr.status}` }; }
      out.replaceChildren();
      if (xhr.status !== 200) { out.append(para(`The upload failed: ${body.message}`, "error")); return; }
      const bad = body.errors.length + body.more_errors;
      out.append(para(`Imported ${body.imported} entries.` +
        (bad ? ` ${bad} ${bad === 1 ? "line was" : "lines were"} not imported:` : ""), "flash"));
      if (body.errors.length) {
        const ul = document.createElement("ul");
        ul.className = "bad-lines";
        for (const e of body.errors) {
          const li = document.createElement("li");
          li.textContent = `line ${e.line}: ${e.message}`;
          ul.append(li);
        }
        out.append(ul);
        if (body.more_errors) out.append(para(`… and ${body.more_errors} more.`));
      }
    };
    xhr.send(file);
  });
}

function para(text, cls) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  return p;
}

const el = document.getElementById("chart");
if (el) chart(el);
const up = document.getElementById("upload");
if (up) upload(up);
const del = document.getElementById("delete-form");
if (del && del.dataset.confirm) {
  del.addEventListener("submit", (ev) => {
    if (!window.confirm(`${del.dataset.confirm}\n\nDelete the selected spam reports anyway?`)) ev.preventDefault();
  });
}
