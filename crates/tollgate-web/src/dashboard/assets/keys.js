// Tollgate dashboard, API Keys page: the Create / Edit key dialog, the one-shot secret box,
// confirmations, and the detail dialog (Edit, Rotate, Duplicate, Ephemeral token, Reveal,
// Deactivate/Activate, Revoke, Delete). Every change goes through /api/v1/keys... with the
// session cookie and the page's CSRF token (app.js's api()).
"use strict";
(function () {
  const T = window.Tollgate;
  if (!T || !document.querySelector("#key-dialog")) return;
  const { $, $$, api, toast, copyText, clearErrors, fieldError, formError, openDialog } = T;

  // ---- One-shot secret box ------------------------------------------------------------
  const NOT_AGAIN = "This key will not be shown again. Make sure to save it securely.";
  const secretDialog = $("#secret-dialog");
  function showSecret(secret, heading, opts) {
    const o = opts || {};
    $("#secret-title").textContent = heading;
    $("#secret-value").textContent = secret;
    $("#secret-dialog .warning").textContent = o.warning || NOT_AGAIN;
    const expiry = $("#secret-expiry");
    expiry.textContent = o.expiresAt ? "Expires at " + o.expiresAt.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "";
    expiry.hidden = !o.expiresAt;
    expiry.dataset.expiresAt = o.expiresAt || "";
    $("#secret-copy span").textContent = "Copy";
    openDialog(secretDialog);
    $("#secret-copy").focus();
  }
  $("#secret-copy").addEventListener("click", async () => {
    const label = $("#secret-copy span");
    const ok = await copyText($("#secret-value").textContent);
    label.textContent = ok ? "Copied!" : "Select and copy";
    if (!ok) window.getSelection().selectAllChildren($("#secret-value"));
    setTimeout(() => { label.textContent = "Copy"; }, 2000);
  });
  // The secret leaves the page when the box closes, whichever way it closes.
  secretDialog.addEventListener("close", () => { $("#secret-value").textContent = ""; location.reload(); });

  // ---- The key form: Create Key, and Edit from the detail dialog -----------------------
  const keyDialog = $("#key-dialog"), form = $("#key-form");
  let editing = null, initial = {};
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
  const radio = (name) => (form.querySelector("input[name=" + name + "]:checked") || {}).value;
  const setRadio = (name, value) => { const r = form.querySelector("input[name=" + name + "][value='" + value + "']"); if (r) r.checked = true; return !!r; };
  function syncForm() {
    $("#key-expires-at").disabled = $("#key-expiry").value !== "custom";
    $("#key-budget-custom").hidden = radio("budget") !== "custom";
    $("#key-models").hidden = radio("model_scope") !== "list";
  }
  form.addEventListener("change", syncForm);
  let expiryTouched = false;
  ["#key-expiry", "#key-expires-at"].forEach((s) => $(s).addEventListener("change", () => { expiryTouched = true; }));

  const meta = $("#key-metadata");
  function metadataProblem(text) {
    if (!text.trim()) return null;
    try {
      const v = JSON.parse(text);
      return v && typeof v === "object" && !Array.isArray(v) ? null : "Must be a JSON object, like {\"env\": \"production\"}.";
    } catch (err) { return "Not valid JSON: " + err.message; }
  }
  meta.addEventListener("input", () => {
    const field = meta.closest(".field"); const e = $(".field-error", field);
    const problem = metadataProblem(meta.value);
    field.classList.toggle("invalid", !!problem); e.textContent = problem || ""; e.hidden = !problem;
    meta.setAttribute("aria-invalid", String(!!problem));
  });

  // Providers the key names that this page did not list (a config change) still show.
  function ensureProvider(name) {
    if (form.querySelector("input[name=allowed_providers][value='" + CSS.escape(name) + "']")) return;
    const label = document.createElement("label"), box = document.createElement("input"), code = document.createElement("code");
    box.type = "checkbox"; box.name = "allowed_providers"; box.value = name; code.textContent = name;
    label.append(box, code); $("#key-providers-list").appendChild(label);
  }

  function openCreate() {
    editing = null; form.reset(); clearErrors(form); expiryTouched = false;
    $("#key-dialog-title").textContent = "Create API key";
    $("#key-submit").textContent = "Create Key";
    selectTab("basic"); syncForm();
    initial = { owner: ownerValue(), team: teamValue() };
    openDialog(keyDialog); $("#key-name").focus();
  }
  $$("#open-create, [data-open-create]").forEach((b) => b.addEventListener("click", openCreate));
  const ownerValue = () => ($("#key-owner") ? $("#key-owner").value : "");
  const teamValue = () => ($("#key-team") ? $("#key-team").value : "");

  function openEdit(k) {
    editing = k; form.reset(); clearErrors(form); expiryTouched = false;
    $("#key-dialog-title").textContent = "Edit " + k.name;
    $("#key-submit").textContent = "Save changes";
    $("#key-name").value = k.name;
    if (k.expires_at) { $("#key-expiry").value = "custom"; $("#key-expires-at").value = k.expires_at.slice(0, 10); }
    else { $("#key-expiry").value = "never"; }
    const budget = k.budget_usd;
    if (budget === null || budget === undefined) setRadio("budget", "");
    else if (!setRadio("budget", String(budget))) { setRadio("budget", "custom"); $("#key-budget-custom").value = String(budget); }
    $("#key-thresholds").value = (k.budget_alert_thresholds || []).join(", ");
    $("#key-rpm").value = k.rpm === null ? "" : k.rpm;
    $("#key-tpm").value = k.tpm === null ? "" : k.tpm;
    $("#key-quota").value = k.token_quota === null ? "" : k.token_quota;
    setRadio("model_scope", k.model_scope);
    $("#key-models").value = (k.models || []).join(", ");
    $$("input[name=allowed_endpoints]", form).forEach((c) => { c.checked = k.allowed_endpoints.includes(c.value); });
    (k.allowed_providers || []).forEach(ensureProvider);
    $$("input[name=allowed_providers]", form).forEach((c) => { c.checked = k.allowed_providers.includes(c.value); });
    $("#key-ips").value = (k.ip_allowlist || []).join("\n");
    meta.value = Object.keys(k.metadata || {}).length ? JSON.stringify(k.metadata, null, 2) : "";
    if ($("#key-owner")) $("#key-owner").value = k.owner_id;
    if ($("#key-team")) $("#key-team").value = k.team_id;
    initial = { owner: ownerValue(), team: teamValue() };
    selectTab("basic"); syncForm();
    openDialog(keyDialog); $("#key-name").focus();
  }

  const list = (s) => s.split(/[\n,]/).map((x) => x.trim()).filter(Boolean);
  const intOrNull = (s) => (String(s).trim() === "" ? null : Number(s));
  const PARAM_FIELD = {
    name: "key-name", expires_in: "key-expiry", expires_at: "key-expires-at", budget_usd: "key-budget",
    budget_alert_thresholds: "key-thresholds", rpm: "key-rpm", tpm: "key-tpm", token_quota: "key-quota",
    model_scope: "key-scope", models: "key-scope", allowed_endpoints: "key-endpoints", allowed_providers: "key-providers",
    ip_allowlist: "key-ips", metadata: "key-metadata", owner_id: "key-owner", team_id: "key-team",
  };
  const ADVANCED = new Set(["key-scope", "key-endpoints", "key-ips", "key-metadata"]);
  function showError(fieldId, message) {
    selectTab(ADVANCED.has(fieldId) ? "advanced" : "basic");
    fieldError(form, fieldId, message);
    return null;
  }

  // The request body, or null after showing the first problem next to its field. Create
  // sends what is set; Edit sends every field (null or [] clears it), the expiry only
  // when it was changed, and owner/team only when they were changed.
  function body() {
    const edit = editing !== null;
    const b = { name: $("#key-name").value.trim() };
    if (!b.name) return showError("key-name", "Give the key a name.");
    if (!edit || expiryTouched) {
      const expiry = $("#key-expiry").value;
      if (expiry === "custom") {
        const d = $("#key-expires-at").value;
        if (!d) return showError("key-expires-at", "Pick a date.");
        b.expires_at = d + "T23:59:59Z";
      } else if (expiry === "never" && edit) { b.expires_at = null; } else { b.expires_in = expiry; }
    }
    const budget = radio("budget");
    if (budget === "custom") {
      const v = Number($("#key-budget-custom").value);
      if (!(v > 0)) return showError("key-budget", "Enter a budget in USD greater than 0.");
      b.budget_usd = v;
    } else if (budget) { b.budget_usd = Number(budget); } else if (edit) { b.budget_usd = null; }
    const thresholds = list($("#key-thresholds").value);
    const nums = thresholds.map(Number);
    if (nums.some((n) => !Number.isInteger(n) || n < 1 || n > 100)) return showError("key-thresholds", "Whole percentages from 1 to 100, comma-separated.");
    if (nums.length || edit) b.budget_alert_thresholds = nums;
    for (const [id, key] of [["key-rpm", "rpm"], ["key-tpm", "tpm"], ["key-quota", "token_quota"]]) {
      const v = intOrNull($("#" + id).value);
      if (v !== null && (!Number.isInteger(v) || v < 1)) return showError(id, "A whole number of at least 1, or empty for unlimited.");
      if (v !== null || edit) b[key] = v;
    }
    b.model_scope = radio("model_scope");
    const models = b.model_scope === "list" ? list($("#key-models").value) : [];
    if (b.model_scope === "list" && !models.length) return showError("key-scope", "Name at least one model id.");
    if (models.length || edit) b.models = models;
    for (const [name, key] of [["allowed_endpoints", "allowed_endpoints"], ["allowed_providers", "allowed_providers"]]) {
      const checked = $$("input[name=" + name + "]:checked", form).map((c) => c.value);
      if (checked.length || edit) b[key] = checked;
    }
    const ips = list($("#key-ips").value);
    if (ips.length || edit) b.ip_allowlist = ips;
    const metaProblem = metadataProblem(meta.value);
    if (metaProblem) return showError("key-metadata", metaProblem);
    if (meta.value.trim()) b.metadata = JSON.parse(meta.value); else if (edit) b.metadata = null;
    if (ownerValue() && (!edit || ownerValue() !== initial.owner)) b.owner_id = ownerValue();
    if (teamValue() && (!edit || teamValue() !== initial.team)) b.team_id = teamValue();
    return b;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const b = body();
    if (!b) return;
    const submit = $("#key-submit"); submit.disabled = true;
    try {
      if (editing) {
        await api("PATCH", "/keys/" + encodeURIComponent(editing.id), b);
        keyDialog.close();
        location.reload();
      } else {
        const created = await api("POST", "/keys", b);
        keyDialog.close();
        showSecret(created.key, "API Key created! Copy it now");
      }
    } catch (err) {
      const fieldId = err.param && PARAM_FIELD[err.param];
      if (fieldId) showError(fieldId, err.message); else formError(form, err.message);
    } finally { submit.disabled = false; }
  });

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

  // ---- Reveal: asks for the password again ----------------------------------------------
  const revealDialog = $("#reveal-dialog");
  function askReveal(k) {
    const f = $("#reveal-form"); f.reset(); clearErrors(f);
    $("#reveal-key-name").textContent = k.name;
    openDialog(revealDialog); $("#reveal-password").focus();
    f.onsubmit = async (ev) => {
      ev.preventDefault(); clearErrors(f);
      const password = $("#reveal-password").value;
      if (!password) return fieldError(f, "reveal-password", "Enter your password.");
      const submit = $("button[type=submit]", f); submit.disabled = true;
      try {
        const res = await api("POST", "/keys/" + encodeURIComponent(k.id) + "/reveal", { password });
        revealDialog.close();
        showSecret(res.key, "Your API key: " + k.name,
          { warning: "Anyone holding this key can spend its budget. Keep it in a secret manager, not in code." });
      } catch (err) {
        if (err.status === 403 || err.param === "password") fieldError(f, "reveal-password", err.status === 403 ? "That is not your password." : err.message);
        else formError(f, err.message);
      } finally { submit.disabled = false; }
    };
  }

  // ---- Key detail dialog --------------------------------------------------------------
  const detail = $("#detail-dialog");
  let current = null, changed = false;
  const money = (v) => (v === null || v === undefined ? "—" : "$" + Number(v).toFixed(2));
  const orDash = (v) => (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length) ? "—" : Array.isArray(v) ? v.join(", ") : String(v));
  function render(k) {
    current = k;
    $("#detail-title").textContent = k.name;
    const rows = [
      ["Status", k.status], ["Key", k.preview], ["Id", k.id], ["Owner", ownerName(k.owner_id)], ["Team", teamName(k.team_id)],
      ["Created", k.created_at], ["Expires", k.expires_at || "Never"],
      ["Last used", k.last_used_at], ["Requests", k.request_count], ["Tokens used", k.tokens_used],
      ["Spend", money(k.spend_usd)], ["Budget", k.budget_usd === null ? "Workspace balance" : money(k.budget_usd)],
      ["Alert thresholds", k.budget_alert_thresholds.length ? k.budget_alert_thresholds.map((t) => t + "%").join(", ") : "—"],
      ["Requests / min", k.rpm === null ? "Unlimited" : k.rpm], ["Tokens / min", k.tpm === null ? "Unlimited" : k.tpm],
      ["Token quota", k.token_quota === null ? "Unlimited" : k.token_quota], ["Models", k.model_scope === "list" ? orDash(k.models) : k.model_scope],
      ["Endpoints", k.allowed_endpoints.length ? k.allowed_endpoints.join(", ") : "All"],
      ["Providers", k.allowed_providers.length ? k.allowed_providers.join(", ") : "All"],
      ["IP allowlist", k.ip_allowlist.length ? k.ip_allowlist.join(", ") : "Any"],
      ["Metadata", Object.keys(k.metadata || {}).length ? JSON.stringify(k.metadata) : "—"],
    ];
    const dl = $("#detail-body"); dl.textContent = "";
    for (const [label, value] of rows) {
      const dt = document.createElement("dt"); dt.textContent = label;
      const dd = document.createElement("dd"); dd.textContent = orDash(value);
      dd.dataset.label = label;
      if (label === "Status") { dd.textContent = ""; const b = document.createElement("span"); b.className = "badge badge-" + k.status; b.textContent = k.status; dd.appendChild(b); }
      dl.append(dt, dd);
    }
    const s = k.status;
    $("#act-disable").hidden = s !== "active";
    $("#act-enable").hidden = s !== "inactive";
    $("#act-revoke").hidden = s === "revoked";
    $("#act-rotate").hidden = s === "revoked";
    $("#act-edit").hidden = s === "revoked";
    $(".detail-rotate", detail).hidden = s === "revoked";
    $(".detail-ephemeral", detail).hidden = s !== "active";
    if ($("#act-reveal")) $("#act-reveal").hidden = s === "revoked";
  }
  const pickerName = (sel, id) => { const o = sel && Array.from(sel.options).find((x) => x.value === id); return o ? o.textContent : id; };
  const ownerName = (id) => pickerName($("#key-owner"), id);
  const teamName = (id) => pickerName($("#key-team"), id);
  $$(".open-detail").forEach((b) => b.addEventListener("click", async () => {
    const id = b.closest("tr").dataset.keyId;
    clearErrors(detail); changed = false;
    try { render(await api("GET", "/keys/" + encodeURIComponent(id))); openDialog(detail); } catch (err) { toast(err.message); }
  }));
  detail.addEventListener("close", () => { if (changed) location.reload(); });
  // Leaves the detail dialog for another dialog without the reload a change would cause.
  const leaveDetail = () => { changed = false; detail.close(); };
  $$("[data-action]", detail).forEach((b) => b.addEventListener("click", async () => {
    if (!current) return;
    const action = b.dataset.action, path = "/keys/" + encodeURIComponent(current.id);
    clearErrors(detail);
    try {
      if (action === "delete") { leaveDetail(); await deleteKey(current.id, current.name); return; }
      if (action === "edit") { const k = current; leaveDetail(); openEdit(k); return; }
      if (action === "reveal") { const k = current; leaveDetail(); askReveal(k); return; }
      if (action === "revoke" && !(await confirmAction("Revoke API Key", "Revoke '" + current.name + "'? It stops working immediately, and revocation is permanent.", "Revoke"))) return;
      if (action === "rotate") {
        const grace = Number($("#rotate-grace").value);
        const idem = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
        const rotated = await api("POST", path + "/rotate", { grace_seconds: grace }, { "idempotency-key": idem });
        // The one-shot box reloads the page when it closes; the detail dialog must not first.
        leaveDetail();
        showSecret(rotated.key, "API Key rotated! Copy it now");
        return;
      }
      if (action === "duplicate") {
        const copy = await api("POST", path + "/duplicate", {});
        leaveDetail();
        showSecret(copy.key, "API Key duplicated! Copy it now",
          { warning: "'" + copy.name + "' has the same settings as '" + current.name + "'. " + NOT_AGAIN });
        return;
      }
      if (action === "ephemeral") {
        const ttl = Number($("#ephemeral-ttl").value);
        const token = await api("POST", path + "/ephemeral", { ttl_seconds: ttl });
        leaveDetail();
        showSecret(token.token, "Ephemeral token created! Copy it now", {
          expiresAt: token.expires_at,
          warning: "It works like '" + current.name + "', with its limits, until it expires. It will not be shown again.",
        });
        return;
      }
      render(await api("POST", path + "/" + action));
      changed = true;
      toast({ disable: "Key deactivated", enable: "Key activated", revoke: "Key revoked" }[action]);
    } catch (err) { formError(detail, err.message); }
  }));
})();
