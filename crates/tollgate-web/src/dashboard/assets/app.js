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

  // Shared with the page scripts (keys.js), which load after this one.
  window.Tollgate = { $, $$, api, toast, copyText, clearErrors, fieldError, formError, openDialog };

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

  // ---- Account: password change (ends every session, so sign in again) ------------------
  const pw = $("#password-form");
  if (pw) pw.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const root = pw.parentElement; clearErrors(root);
    const current = $("#current-password").value, next = $("#new-password").value, again = $("#confirm-password").value;
    const min = Number(pw.dataset.minLength || "12");
    if (!current) return fieldError(pw, "current-password", "Enter your current password.");
    if (next.length < min) return fieldError(pw, "new-password", "At least " + min + " characters.");
    if (next !== again) return fieldError(pw, "confirm-password", "The two new passwords differ.");
    const submit = $("#password-submit"); submit.disabled = true;
    try {
      await api("POST", "/me/password", { current_password: current, new_password: next });
      location.href = "/dashboard/login?changed=1";
    } catch (err) {
      if (err.status === 403) fieldError(pw, "current-password", "That is not your current password.");
      else if (err.status === 429) formError(root, "Too many wrong passwords; try again later.");
      else if (err.param === "new_password") fieldError(pw, "new-password", err.message);
      else formError(root, err.message);
    } finally { submit.disabled = false; }
  });

  // ---- Tables whose rows open a detail page ---------------------------------------------
  $$("tr[data-href]").forEach((tr) => tr.addEventListener("click", (ev) => {
    if (ev.target.closest("a, button, summary, input, select") || String(window.getSelection())) return;
    location.href = tr.dataset.href;
  }));

  // ---- Billing: admin credit ----------------------------------------------------------
  const credit = $("#credit-form");
  if (credit) {
    // A package fills the amount; typing an amount picks its package, or "Custom amount".
    const amountInput = $("#credit-amount"), packages = $$("input[name=package]", credit);
    packages.forEach((r) => r.addEventListener("change", () => {
      if (r.value === "custom") amountInput.focus(); else amountInput.value = r.value;
    }));
    amountInput.addEventListener("input", () => {
      const v = amountInput.value.trim(), match = packages.find((r) => r.value !== "custom" && Number(r.value) === Number(v));
      packages.forEach((r) => { r.checked = v !== "" && (match ? r === match : r.value === "custom"); });
    });
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
})();
