// Tollgate dashboard script: progressive behaviour over server-rendered pages. Every change
// goes through the JSON API (/api/v1/...) with the session cookie and the page's CSRF token.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const csrf = () => { const m = $('meta[name="csrf-token"]'); return m ? m.content : ""; };

  class ApiError extends Error {
    constructor(status, message, param, retryAfter) { super(message); this.status = status; this.param = param; this.retryAfter = retryAfter; }
  }

  async function api(method, path, body, headers) {
    const init = { method, credentials: "same-origin", headers: Object.assign({ "x-csrf-token": csrf() }, headers || {}) };
    if (body !== undefined) { init.headers["content-type"] = "application/json"; init.body = JSON.stringify(body); }
    const res = await fetch("/api/v1" + path, init);
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.message || ("Request failed (" + res.status + ")"), err.param, res.headers.get("retry-after"));
    }
    return data;
  }

  function toast(text) {
    let t = $("#toast");
    if (!t) { t = document.createElement("div"); t.id = "toast"; t.setAttribute("role", "status"); document.body.appendChild(t); }
    t.textContent = text; t.hidden = false;
    clearTimeout(t._timer); t._timer = setTimeout(() => { t.hidden = true; }, 2500);
  }

  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return true; } catch (_) { /* fall back below */ }
    const ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    ta.remove();
    return ok;
  }

  // ---- Field errors, shown next to the field ------------------------------------------
  function clearErrors(root) {
    $$(".field.invalid", root).forEach((f) => f.classList.remove("invalid"));
    $$(".field-error", root).forEach((e) => { e.textContent = ""; e.hidden = true; });
    $$(".form-error", root).forEach((e) => { e.textContent = ""; e.hidden = true; });
  }
  function fieldError(root, fieldId, message) {
    const field = $('[data-field="' + fieldId + '"]', root);
    if (!field) return false;
    field.classList.add("invalid");
    const e = $(".field-error", field); e.textContent = message; e.hidden = false;
    const input = $("input:not([type=radio]):not([hidden]), textarea, select", field);
    if (input) input.setAttribute("aria-invalid", "true");
    return true;
  }
  function formError(root, message) {
    const e = $(".form-error", root); if (e) { e.textContent = message; e.hidden = false; } else { toast(message); }
  }

  // ---- Dialogs: modal, Esc closes (native), Tab stays inside ----------------------------
  function openDialog(d) { if (!d.open) d.showModal(); const f = focusables(d)[0]; if (f) f.focus(); }
  function focusables(d) {
    return $$('a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])', d)
      .filter((el) => el.offsetParent !== null || el === document.activeElement);
  }
  $$("dialog").forEach((d) => {
    d.addEventListener("keydown", (ev) => {
      if (ev.key !== "Tab") return;
      const items = focusables(d); if (!items.length) return;
      const first = items[0], last = items[items.length - 1];
      if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
      else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
    });
    $$("[data-close]", d).forEach((b) => b.addEventListener("click", () => d.close()));
  });

  // ---- Shell: navigation toggle, sign out ----------------------------------------------
  const toggle = $(".nav-toggle");
  if (toggle) toggle.addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    toggle.setAttribute("aria-expanded", String(open));
  });
  const signOut = $("#sign-out");
  if (signOut) signOut.addEventListener("click", async () => {
    try { await fetch("/api/v1/auth/logout", { method: "POST", credentials: "same-origin" }); } finally { location.href = "/dashboard/login"; }
  });
  $$("[data-copy]").forEach((b) => b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    toast((await copyText(b.dataset.copy)) ? "Copied " + b.dataset.copy : "Copy failed; select the text instead");
  }));

  // ---- Sign in -------------------------------------------------------------------------
  const login = $("#login-form");
  if (login) login.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(login.parentElement);
    const box = $("#login-error"); box.hidden = true;
    const email = $("#email").value.trim(), password = $("#password").value;
    let bad = false;
    if (!email) bad = fieldErrorOf("email", "Enter your email.") || true;
    if (!password) bad = fieldErrorOf("password", "Enter your password.") || true;
    if (bad) return;
    const button = $("button[type=submit]", login); button.disabled = true;
    try {
      const res = await fetch("/api/v1/auth/login", { method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json" }, body: JSON.stringify({ email, password }) });
      if (res.ok) { location.href = login.dataset.next || "/dashboard"; return; }
      let message = "Sign-in failed; try again.";
      if (res.status === 401) message = "Wrong email or password.";
      else if (res.status === 429) {
        const wait = parseInt(res.headers.get("retry-after") || "0", 10);
        message = "Too many failed sign-ins. Try again in " + (wait > 90 ? Math.ceil(wait / 60) + " minutes" : (wait || "a few") + " seconds") + ".";
      } else { try { message = (await res.json()).error.message || message; } catch (_) { /* keep */ } }
      box.textContent = message; box.hidden = false;
      $("#password").value = ""; $("#password").focus();
    } catch (_) {
      box.textContent = "The server could not be reached."; box.hidden = false;
    } finally { button.disabled = false; }
  });
  function fieldErrorOf(inputId, message) {
    const input = $("#" + inputId); const field = input.closest(".field");
    field.classList.add("invalid"); const e = $(".field-error", field); e.textContent = message; e.hidden = false;
    input.setAttribute("aria-invalid", "true"); input.focus();
    return true;
  }

  // ---- One-shot secret box ------------------------------------------------------------
  const secretDialog = $("#secret-dialog");
  function showSecret(secret, heading) {
    $("#secret-title").textContent = heading;
    $("#secret-value").textContent = secret;
    const label = $("#secret-copy span"); label.textContent = "Copy";
    openDialog(secretDialog);
    $("#secret-copy").focus();
  }
  if (secretDialog) {
    $("#secret-copy").addEventListener("click", async () => {
      const label = $("#secret-copy span");
      const ok = await copyText($("#secret-value").textContent);
      label.textContent = ok ? "Copied!" : "Select and copy";
      if (!ok) window.getSelection().selectAllChildren($("#secret-value"));
      setTimeout(() => { label.textContent = "Copy"; }, 2000);
    });
    // The secret leaves the page when the box closes, whichever way it closes.
    secretDialog.addEventListener("close", () => { $("#secret-value").textContent = ""; location.reload(); });
  }

  // ---- Create Key ---------------------------------------------------------------------
  const createDialog = $("#create-dialog");
  if (createDialog) {
    const form = $("#create-form");
    $$("#open-create, [data-open-create]").forEach((b) => b.addEventListener("click", () => {
      form.reset(); clearErrors(form); selectTab("basic"); syncCreate(); openDialog(createDialog); $("#key-name").focus();
    }));
    const tabs = { basic: $("#tab-basic"), advanced: $("#tab-advanced") };
    function selectTab(name) {
      for (const [k, tab] of Object.entries(tabs)) {
        const on = k === name;
        tab.setAttribute("aria-selected", String(on)); tab.tabIndex = on ? 0 : -1;
        $("#panel-" + k).hidden = !on;
      }
    }
    Object.entries(tabs).forEach(([name, tab]) => {
      tab.addEventListener("click", () => selectTab(name));
      tab.addEventListener("keydown", (ev) => {
        if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
          const other = name === "basic" ? "advanced" : "basic"; selectTab(other); tabs[other].focus(); ev.preventDefault();
        }
      });
    });
    function syncCreate() {
      const custom = $("#key-expiry").value === "custom";
      $("#key-expires-at").disabled = !custom;
      const budget = (form.querySelector("input[name=budget]:checked") || {}).value;
      $("#key-budget-custom").hidden = budget !== "custom";
      const scope = (form.querySelector("input[name=model_scope]:checked") || {}).value;
      $("#key-models").hidden = scope !== "list";
    }
    form.addEventListener("change", syncCreate);
    const meta = $("#key-metadata");
    meta.addEventListener("input", () => {
      const field = meta.closest(".field"); const e = $(".field-error", field);
      const problem = metadataProblem(meta.value);
      field.classList.toggle("invalid", !!problem); e.textContent = problem || ""; e.hidden = !problem;
      meta.setAttribute("aria-invalid", String(!!problem));
    });
    function metadataProblem(text) {
      if (!text.trim()) return null;
      try {
        const v = JSON.parse(text);
        return v && typeof v === "object" && !Array.isArray(v) ? null : "Must be a JSON object, like {\"env\": \"production\"}.";
      } catch (err) { return "Not valid JSON: " + err.message; }
    }
    const list = (s) => s.split(/[\n,]/).map((x) => x.trim()).filter(Boolean);
    const intOrNull = (s) => (s.trim() === "" ? null : Number(s));
    const PARAM_FIELD = {
      name: "key-name", expires_in: "key-expiry", expires_at: "key-expires-at", budget_usd: "key-budget",
      budget_alert_thresholds: "key-thresholds", rpm: "key-rpm", tpm: "key-tpm", token_quota: "key-quota",
      model_scope: "key-scope", models: "key-scope", allowed_endpoints: "key-endpoints", ip_allowlist: "key-ips", metadata: "key-metadata",
    };
    const ADVANCED = new Set(["key-scope", "key-endpoints", "key-ips", "key-metadata"]);
    function showError(fieldId, message) {
      selectTab(ADVANCED.has(fieldId) ? "advanced" : "basic");
      fieldError(form, fieldId, message);
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = { name: $("#key-name").value.trim() };
      if (!body.name) return showError("key-name", "Give the key a name.");
      const expiry = $("#key-expiry").value;
      if (expiry === "custom") {
        const d = $("#key-expires-at").value;
        if (!d) return showError("key-expires-at", "Pick a date.");
        body.expires_at = d + "T23:59:59Z";
      } else { body.expires_in = expiry; }
      const budget = form.querySelector("input[name=budget]:checked").value;
      if (budget === "custom") {
        const v = Number($("#key-budget-custom").value);
        if (!(v > 0)) return showError("key-budget", "Enter a budget in USD greater than 0.");
        body.budget_usd = v;
      } else if (budget) { body.budget_usd = Number(budget); }
      const thresholds = list($("#key-thresholds").value);
      if (thresholds.length) {
        const nums = thresholds.map(Number);
        if (nums.some((n) => !Number.isInteger(n) || n < 1 || n > 100)) return showError("key-thresholds", "Whole percentages from 1 to 100, comma-separated.");
        body.budget_alert_thresholds = nums;
      }
      for (const [id, key] of [["key-rpm", "rpm"], ["key-tpm", "tpm"], ["key-quota", "token_quota"]]) {
        const v = intOrNull($("#" + id).value);
        if (v !== null) {
          if (!Number.isInteger(v) || v < 1) return showError(id, "A whole number of at least 1, or empty for unlimited.");
          body[key] = v;
        }
      }
      const scope = form.querySelector("input[name=model_scope]:checked").value;
      body.model_scope = scope;
      if (scope === "list") {
        body.models = list($("#key-models").value);
        if (!body.models.length) return showError("key-scope", "Name at least one model id.");
      }
      const endpoints = $$("input[name=allowed_endpoints]:checked", form).map((c) => c.value);
      if (endpoints.length) body.allowed_endpoints = endpoints;
      const ips = list($("#key-ips").value);
      if (ips.length) body.ip_allowlist = ips;
      const metaProblem = metadataProblem(meta.value);
      if (metaProblem) return showError("key-metadata", metaProblem);
      if (meta.value.trim()) body.metadata = JSON.parse(meta.value);
      const submit = $("#create-submit"); submit.disabled = true;
      try {
        const created = await api("POST", "/keys", body);
        createDialog.close();
        showSecret(created.key, "API Key created! Copy it now");
      } catch (err) {
        const fieldId = err.param && PARAM_FIELD[err.param];
        if (fieldId) showError(fieldId, err.message); else formError(form, err.message);
      } finally { submit.disabled = false; }
    });
  }

  // ---- Confirmations ------------------------------------------------------------------
  const confirmDialog = $("#confirm-dialog");
  function confirmAction(title, text, okLabel) {
    return new Promise((resolve) => {
      $("#confirm-title").textContent = title; $("#confirm-text").textContent = text; $("#confirm-ok").textContent = okLabel;
      let answered = false;
      const ok = $("#confirm-ok");
      const onOk = () => { answered = true; confirmDialog.close(); };
      ok.addEventListener("click", onOk, { once: true });
      confirmDialog.addEventListener("close", () => { ok.removeEventListener("click", onOk); resolve(answered); }, { once: true });
      openDialog(confirmDialog);
    });
  }
  const deleteText = (name) => "Are you sure you want to delete '" + name + "'? This action cannot be undone.";
  async function deleteKey(id, name) {
    if (!(await confirmAction("Delete API Key", deleteText(name), "Delete"))) return false;
    try { await api("DELETE", "/keys/" + encodeURIComponent(id)); location.reload(); return true; }
    catch (err) { toast(err.message); return false; }
  }
  $$(".delete-key").forEach((b) => b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    const row = b.closest("tr"); deleteKey(row.dataset.keyId, row.dataset.keyName);
  }));

  // ---- Key detail dialog --------------------------------------------------------------
  const detail = $("#detail-dialog");
  if (detail) {
    let current = null, changed = false;
    const money = (v) => (v === null || v === undefined ? "—" : "$" + Number(v).toFixed(2));
    const orDash = (v) => (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length) ? "—" : Array.isArray(v) ? v.join(", ") : String(v));
    function render(k) {
      current = k;
      $("#detail-title").textContent = k.name;
      const rows = [
        ["Status", k.status], ["Key", k.preview], ["Id", k.id], ["Created", k.created_at], ["Expires", k.expires_at || "Never"],
        ["Last used", k.last_used_at], ["Requests", k.request_count], ["Tokens used", k.tokens_used],
        ["Spend", money(k.spend_usd)], ["Budget", k.budget_usd === null ? "Workspace balance" : money(k.budget_usd)],
        ["Requests / min", k.rpm === null ? "Unlimited" : k.rpm], ["Tokens / min", k.tpm === null ? "Unlimited" : k.tpm],
        ["Token quota", k.token_quota === null ? "Unlimited" : k.token_quota], ["Models", k.model_scope === "list" ? orDash(k.models) : k.model_scope],
        ["Endpoints", k.allowed_endpoints.length ? k.allowed_endpoints.join(", ") : "All"], ["IP allowlist", k.ip_allowlist.length ? k.ip_allowlist.join(", ") : "Any"],
        ["Metadata", Object.keys(k.metadata || {}).length ? JSON.stringify(k.metadata) : "—"],
      ];
      const dl = $("#detail-body"); dl.textContent = "";
      for (const [label, value] of rows) {
        const dt = document.createElement("dt"); dt.textContent = label;
        const dd = document.createElement("dd"); dd.textContent = orDash(value);
        if (label === "Status") { dd.textContent = ""; const b = document.createElement("span"); b.className = "badge badge-" + k.status; b.textContent = k.status; dd.appendChild(b); }
        dl.append(dt, dd);
      }
      const s = k.status;
      $("#act-disable").hidden = s !== "active";
      $("#act-enable").hidden = s !== "inactive";
      $("#act-revoke").hidden = s === "revoked";
      $("#act-rotate").hidden = s === "revoked";
      $(".detail-rotate", detail).hidden = s === "revoked";
    }
    $$(".open-detail").forEach((b) => b.addEventListener("click", async () => {
      const id = b.closest("tr").dataset.keyId;
      clearErrors(detail); changed = false;
      try { render(await api("GET", "/keys/" + encodeURIComponent(id))); openDialog(detail); } catch (err) { toast(err.message); }
    }));
    detail.addEventListener("close", () => { if (changed) location.reload(); });
    $$("[data-action]", detail).forEach((b) => b.addEventListener("click", async () => {
      if (!current) return;
      const action = b.dataset.action, path = "/keys/" + encodeURIComponent(current.id);
      clearErrors(detail);
      try {
        if (action === "delete") { detail.close(); await deleteKey(current.id, current.name); return; }
        if (action === "revoke" && !(await confirmAction("Revoke API Key", "Revoke '" + current.name + "'? It stops working immediately, and revocation is permanent.", "Revoke"))) return;
        if (action === "rotate") {
          const grace = Number($("#rotate-grace").value);
          const idem = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
          const rotated = await api("POST", path + "/rotate", { grace_seconds: grace }, { "idempotency-key": idem });
          // The one-shot box reloads the page when it closes; the detail dialog must not first.
          changed = false; detail.close();
          showSecret(rotated.key, "API Key rotated! Copy it now");
          return;
        }
        render(await api("POST", path + "/" + action));
        changed = true;
        toast({ disable: "Key deactivated", enable: "Key activated", revoke: "Key revoked" }[action]);
      } catch (err) { formError(detail, err.message); }
    }));
  }

  // ---- Billing: admin credit ----------------------------------------------------------
  const credit = $("#credit-form");
  if (credit) {
    $$("input[name=package]", credit).forEach((r) => r.addEventListener("change", () => { $("#credit-amount").value = r.value; }));
    credit.addEventListener("submit", async (ev) => {
      ev.preventDefault(); clearErrors(credit);
      const amount = Number($("#credit-amount").value);
      if (!(amount > 0)) return fieldError(credit, "credit-amount", "Enter an amount in USD greater than 0.");
      const note = $("#credit-note").value.trim();
      try { await api("POST", "/billing/credits", note ? { amount_usd: amount, note } : { amount_usd: amount }); location.reload(); }
      catch (err) { if (err.param === "amount_usd") fieldError(credit, "credit-amount", err.message); else toast(err.message); }
    });
  }
  // ---- Playground ---------------------------------------------------------------------
  // Runs go to /dashboard/playground/run: the server mints a short-lived token for the
  // chosen key and relays the data plane's SSE stream. No secret ever reaches this page.
  const pg = $("#pg-form");
  if (pg) {
    const out = $("#pg-output"), meta = $("#pg-meta");
    const values = () => ({
      key_id: $("#pg-key").value, model: $("#pg-model").value, system: $("#pg-system").value,
      prompt: $("#pg-prompt").value, temperature: $("#pg-temperature").value.trim(), max_tokens: $("#pg-max-tokens").value.trim(),
    });
    const messagesOf = (v) => {
      const m = [];
      if (v.system.trim()) m.push({ role: "system", content: v.system });
      m.push({ role: "user", content: v.prompt || "Hello!" });
      return m;
    };
    const pyStr = (s) => JSON.stringify(s);
    const shQuote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
    function snippets() {
      const v = values(), base = location.origin + "/v1", msgs = messagesOf(v);
      const temp = v.temperature === "" ? null : Number(v.temperature), max = v.max_tokens === "" ? null : Number(v.max_tokens);
      const body = { model: v.model, messages: msgs };
      if (temp !== null) body.temperature = temp;
      if (max !== null) body.max_tokens = max;
      const curl = "curl " + base + "/chat/completions \\\n" +
        "  -H \"Authorization: Bearer $TOLLGATE_API_KEY\" \\\n" +
        "  -H \"Content-Type: application/json\" \\\n" +
        "  -d " + shQuote(JSON.stringify(body, null, 2));
      const pyMsgs = msgs.map((m) => "        {\"role\": " + pyStr(m.role) + ", \"content\": " + pyStr(m.content) + "},").join("\n");
      const python = "import os\nfrom openai import OpenAI\n\n" +
        "client = OpenAI(\n    base_url=" + pyStr(base) + ",\n    api_key=os.environ[\"TOLLGATE_API_KEY\"],\n)\n\n" +
        "response = client.chat.completions.create(\n    model=" + pyStr(v.model) + ",\n    messages=[\n" + pyMsgs + "\n    ],\n" +
        (temp !== null ? "    temperature=" + temp + ",\n" : "") + (max !== null ? "    max_tokens=" + max + ",\n" : "") +
        ")\nprint(response.choices[0].message.content)\n";
      const jsMsgs = msgs.map((m) => "    { role: " + JSON.stringify(m.role) + ", content: " + JSON.stringify(m.content) + " },").join("\n");
      const js = "import OpenAI from \"openai\";\n\n" +
        "const client = new OpenAI({\n  baseURL: " + JSON.stringify(base) + ",\n  apiKey: process.env.TOLLGATE_API_KEY,\n});\n\n" +
        "const response = await client.chat.completions.create({\n  model: " + JSON.stringify(v.model) + ",\n  messages: [\n" + jsMsgs + "\n  ],\n" +
        (temp !== null ? "  temperature: " + temp + ",\n" : "") + (max !== null ? "  max_tokens: " + max + ",\n" : "") +
        "});\nconsole.log(response.choices[0].message.content);\n";
      $("#snip-curl code").textContent = curl;
      $("#snip-python code").textContent = python;
      $("#snip-js code").textContent = js;
    }
    pg.addEventListener("input", snippets); pg.addEventListener("change", snippets); snippets();
    const snipTabs = $$(".pg-tabs [role=tab]");
    function selectSnip(tab) {
      snipTabs.forEach((t) => { const on = t === tab; t.setAttribute("aria-selected", String(on)); t.tabIndex = on ? 0 : -1; $("#" + t.getAttribute("aria-controls")).hidden = !on; });
    }
    snipTabs.forEach((t, i) => {
      t.addEventListener("click", () => selectSnip(t));
      t.addEventListener("keydown", (ev) => {
        const d = ev.key === "ArrowRight" ? 1 : ev.key === "ArrowLeft" ? -1 : 0; if (!d) return;
        const next = snipTabs[(i + d + snipTabs.length) % snipTabs.length]; selectSnip(next); next.focus(); ev.preventDefault();
      });
    });
    $$(".snip-copy").forEach((b) => b.addEventListener("click", async () => {
      const label = $("span", b), ok = await copyText($("code", b.parentElement).textContent);
      label.textContent = ok ? "Copied!" : "Select and copy"; setTimeout(() => { label.textContent = "Copy"; }, 2000);
    }));
    const PG_FIELD = { key_id: "pg-key", model: "pg-model", models: "pg-model", prompt: "pg-prompt", temperature: "pg-temperature", max_tokens: "pg-max-tokens" };
    pg.addEventListener("submit", async (ev) => {
      ev.preventDefault(); clearErrors(pg);
      const v = values();
      if (!v.prompt.trim()) return fieldError(pg, "pg-prompt", "Write a prompt to run.");
      const body = { key_id: v.key_id, model: v.model, prompt: v.prompt };
      if (v.system.trim()) body.system = v.system;
      if (v.temperature !== "") {
        const t = Number(v.temperature);
        if (!(t >= 0 && t <= 2)) return fieldError(pg, "pg-temperature", "From 0 to 2.");
        body.temperature = t;
      }
      if (v.max_tokens !== "") {
        const m = Number(v.max_tokens);
        if (!Number.isInteger(m) || m < 1) return fieldError(pg, "pg-max-tokens", "A whole number of at least 1.");
        body.max_tokens = m;
      }
      const run = $("#pg-run"); run.disabled = true; run.textContent = "Running…";
      out.textContent = ""; out.dataset.state = "running"; meta.textContent = "";
      const started = performance.now();
      let firstAt = null, usage = null, text = "";
      try {
        const res = await fetch("/dashboard/playground/run", { method: "POST", credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": csrf() }, body: JSON.stringify(body) });
        const requestId = res.headers.get("x-request-id");
        if (!res.ok || !(res.headers.get("content-type") || "").includes("text/event-stream")) {
          let message = "The run failed (" + res.status + ").", param = null;
          try { const e = (await res.json()).error || {}; message = e.message || message; param = e.param; } catch (_) { /* keep */ }
          if (res.status === 401 && !param) message += " Sign in again.";
          const field = param && PG_FIELD[param];
          if (field) fieldError(pg, field, message); else formError(pg, message);
          out.dataset.state = "error"; out.textContent = "";
          return;
        }
        const reader = res.body.getReader(), dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, cut).trim(); buf = buf.slice(cut + 1);
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            let chunk; try { chunk = JSON.parse(data); } catch (_) { continue; }
            if (chunk.error) { formError(pg, chunk.error.message || "The model returned an error."); continue; }
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) { if (firstAt === null) firstAt = performance.now(); text += delta.content; out.textContent = text; }
            if (chunk.usage) usage = chunk.usage;
          }
        }
        out.dataset.state = "done";
        if (!text) out.textContent = "(The model returned no text.)";
        const parts = [];
        if (firstAt !== null) parts.push("first token " + Math.round(firstAt - started) + " ms");
        parts.push("total " + Math.round(performance.now() - started) + " ms");
        if (usage) parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens");
        if (requestId) parts.push(requestId);
        meta.textContent = parts.join(" · ");
      } catch (_) {
        formError(pg, "The server could not be reached."); out.dataset.state = "error";
      } finally { run.disabled = false; run.textContent = "Run"; }
    });
  }

  // ---- Teams --------------------------------------------------------------------------
  const teamDialog = $("#team-dialog");
  if (teamDialog) {
    const form = $("#team-form");
    $$("#open-team-create, [data-open-team-create]").forEach((b) => b.addEventListener("click", () => {
      form.reset(); clearErrors(form); openDialog(teamDialog); $("#team-name").focus();
    }));
    const TEAM_FIELD = { name: "team-name", allowed_models: "team-models", budget_usd: "team-budget", rpm: "team-rpm", tpm: "team-tpm", token_quota: "team-quota" };
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault(); clearErrors(form);
      const body = { name: $("#team-name").value.trim() };
      if (!body.name) return fieldError(form, "team-name", "Give the team a name.");
      const models = $("#team-models").value.split(/[\n,]/).map((x) => x.trim()).filter(Boolean);
      if (models.length) body.allowed_models = models;
      const budget = $("#team-budget").value.trim();
      if (budget !== "") { const b = Number(budget); if (!(b > 0)) return fieldError(form, "team-budget", "A budget in USD greater than 0, or empty."); body.budget_usd = b; }
      for (const [id, key] of [["team-rpm", "rpm"], ["team-tpm", "tpm"], ["team-quota", "token_quota"]]) {
        const raw = $("#" + id).value.trim(); if (raw === "") continue;
        const n = Number(raw); if (!Number.isInteger(n) || n < 1) return fieldError(form, id, "A whole number of at least 1, or empty for unlimited.");
        body[key] = n;
      }
      const submit = $("#team-submit"); submit.disabled = true;
      try { await api("POST", "/teams", body); location.reload(); }
      catch (err) { const f = err.param && TEAM_FIELD[err.param]; if (f) fieldError(form, f, err.message); else formError(form, err.message); }
      finally { submit.disabled = false; }
    });
  }
  $$("form.add-member").forEach((f) => f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const team = f.closest("[data-team-id]").dataset.teamId, user = $("select", f).value;
    try { await api("POST", "/teams/" + encodeURIComponent(team) + "/members", { user_id: user }); location.reload(); }
    catch (err) { toast(err.message); }
  }));
  $$(".remove-member").forEach((b) => b.addEventListener("click", async () => {
    const team = b.closest("[data-team-id]").dataset.teamId, user = b.closest("[data-user-id]").dataset.userId;
    try { await api("DELETE", "/teams/" + encodeURIComponent(team) + "/members/" + encodeURIComponent(user)); location.reload(); }
    catch (err) { toast(err.message); }
  }));
})();
