// Tollgate dashboard, API Keys page (served after keys.js, in the same file): the detail
// dialog (Edit, Rotate, Duplicate, Ephemeral token, Reveal, Deactivate/Activate, Revoke,
// Delete), the Reveal password prompt and the delete confirmation. Every change goes
// through /api/v1/keys... with the page's CSRF token (app.js's api()).
"use strict";
(function () {
  const T = window.Tollgate;
  if (!T || !T.keys) return;
  const { $, $$, api, toast, clearErrors, fieldError, formError, openDialog } = T;
  const { showSecret, openEdit, NOT_AGAIN } = T.keys;

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
  function mcpSummary(m) {
    if (!m || !Object.keys(m).length) return "—";
    const tools = Object.entries(m.tools || {}).flatMap(([server, names]) => names.map((t) => server + ":" + t));
    return [m.enabled ? "Enabled" : "Disabled", (m.mode || "allow_all").replace("_", "-"),
      (m.servers || []).length ? "servers " + m.servers.join(", ") : "", tools.length ? "tools " + tools.join(", ") : ""]
      .filter(Boolean).join(" · ");
  }
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
      ["MCP", mcpSummary(k.mcp)],
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
  detail.addEventListener("close", () => { $("#rotate-password").value = ""; if (changed) location.reload(); });
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
        // A rotation asks for the password again (the API refuses a session without it).
        const password = $("#rotate-password").value;
        if (!password) { fieldError(detail, "rotate-password", "Enter your password to rotate the key."); $("#rotate-password").focus(); return; }
        const grace = Number($("#rotate-grace").value);
        const idem = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
        const rotated = await api("POST", path + "/rotate", { grace_seconds: grace, password }, { "idempotency-key": idem });
        $("#rotate-password").value = "";
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
    } catch (err) {
      if (err.param === "password") fieldError(detail, "rotate-password", err.message);
      else formError(detail, err.message);
    }
  }));
})();
