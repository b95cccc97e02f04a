/**
 * The chat page served at `/`: one self-contained HTML file (no build step, no external assets) that
 * talks to the server's own OpenAI endpoint: image upload (sent as a data: URL), streamed answer, and
 * each answer's stats from the final usage chunk. It keeps the conversation and replays it each turn,
 * so the server reuses the KV cache of the previous turns.
 */
export const CHAT_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>nanomind</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 760px; margin: 0 auto; padding: 12px; color: #222; }
  header { display: flex; gap: 8px; align-items: baseline; justify-content: space-between; }
  #log { display: flex; flex-direction: column; gap: 10px; margin: 12px 0; }
  .msg { padding: 8px 10px; border-radius: 8px; white-space: pre-wrap; }
  .user { background: #e8f0fe; align-self: flex-end; max-width: 85%; }
  .assistant { background: #f3f3f3; align-self: flex-start; max-width: 85%; }
  .msg img { display: block; max-width: 160px; max-height: 160px; margin-bottom: 4px; image-rendering: pixelated; }
  .stats { font-size: 12px; color: #666; margin-top: 4px; white-space: normal; }
  .error { background: #fde8e8; }
  form { display: grid; grid-template-columns: 1fr auto; gap: 6px; }
  textarea { font: inherit; min-height: 3em; }
  #preview { max-height: 48px; }
  small { color: #666; }
</style></head>
<body>
<header><h1>nanomind</h1><small id="model">…</small></header>
<div id="log"></div>
<form id="form">
  <textarea id="prompt" placeholder="Ask about an image…"></textarea>
  <button id="send" type="submit">Send</button>
  <div><input id="image" type="file" accept="image/*"> <img id="preview" alt="" hidden></div>
  <button id="reset" type="button">New chat</button>
  <input id="key" type="password" placeholder="API key (if the server needs one)" autocomplete="off">
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let model = null, history = [], pendingImage = null;
const headers = () => Object.assign({ "content-type": "application/json" }, $("key").value ? { authorization: "Bearer " + $("key").value } : {});
async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const j = await r.json();
    if (!r.ok) throw new Error(j.error ? j.error.message : r.statusText);
    model = j.data[0].id;
    $("model").textContent = model;
  } catch (e) { $("model").textContent = "models: " + e.message; }
}
function bubble(role, text, image) {
  const d = document.createElement("div");
  d.className = "msg " + role;
  if (image) { const i = document.createElement("img"); i.src = image; d.appendChild(i); }
  const t = document.createElement("span"); t.className = "text"; t.textContent = text; d.appendChild(t);
  $("log").appendChild(d);
  return d;
}
$("image").addEventListener("change", () => {
  const f = $("image").files[0];
  if (!f) { pendingImage = null; $("preview").hidden = true; return; }
  const reader = new FileReader();
  reader.onload = () => { pendingImage = reader.result; $("preview").src = pendingImage; $("preview").hidden = false; };
  reader.readAsDataURL(f);
});
$("reset").addEventListener("click", () => { history = []; $("log").textContent = ""; });
$("key").addEventListener("change", loadModel);
$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("prompt").value.trim();
  if (!text && !pendingImage) return;
  if (!model) await loadModel();
  const content = pendingImage ? [{ type: "text", text }, { type: "image_url", image_url: { url: pendingImage } }] : text;
  bubble("user", text, pendingImage);
  history.push({ role: "user", content });
  pendingImage = null; $("image").value = ""; $("preview").hidden = true; $("prompt").value = "";
  const out = bubble("assistant", "");
  out.classList.add("pending");
  const span = out.querySelector(".text");
  $("send").disabled = true;
  const t0 = performance.now();
  let answer = "", usage = null, timings = null, first = 0;
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify({ model, messages: history, stream: true }) });
    if (!r.ok) { const j = await r.json().catch(() => ({})); throw new Error(j.error ? j.error.message : r.status + " " + r.statusText); }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let k;
      while ((k = buf.indexOf("\\n\\n")) >= 0) {
        const ev = buf.slice(0, k); buf = buf.slice(k + 2);
        if (!ev.startsWith("data: ")) continue;
        const data = ev.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const delta = j.choices && j.choices[0] && j.choices[0].delta && j.choices[0].delta.content;
        if (delta) { if (!first) first = performance.now() - t0; answer += delta; span.textContent = answer; }
        if (j.usage) { usage = j.usage; timings = j.timings; }
      }
    }
    history.push({ role: "assistant", content: answer });
    const s = document.createElement("div"); s.className = "stats";
    s.textContent = usage ? [
      usage.prompt_tokens + " prompt tokens (" + usage.prompt_tokens_details.cached_tokens + " cached)",
      usage.completion_tokens + " tokens",
      "first token " + (timings ? timings.ttft_ms.toFixed(0) : first.toFixed(0)) + " ms",
      (timings ? timings.predicted_per_second.toFixed(1) : "-") + " tok/s",
      "queue " + (timings ? timings.queue_ms.toFixed(0) : "-") + " ms",
      "total " + (performance.now() - t0).toFixed(0) + " ms",
    ].join(" · ") : "no usage";
    out.appendChild(s);
  } catch (e) {
    out.classList.add("error"); span.textContent = "error: " + e.message;
    history.pop();
  } finally {
    out.classList.remove("pending"); out.classList.add("done");
    $("send").disabled = false;
  }
});
loadModel();
</script>
</body></html>
`;
