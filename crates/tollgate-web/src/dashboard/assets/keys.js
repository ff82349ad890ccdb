// Tollgate dashboard, API Keys page: the Create / Edit key dialog (Basic and Advanced tabs,
// MCP access included) and the one-shot secret box; the detail dialog is keys_detail.js.
// Every change goes through /api/v1/keys... with the session cookie and the page's CSRF
// token (app.js's api()).
"use strict";
(function () {
  const T = window.Tollgate;
  if (!T || !document.querySelector("#key-dialog")) return;
  const { $, $$, api, copyText, clearErrors, fieldError, formError, openDialog } = T;

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
    const mcp = k.mcp || {};
    $("#key-mcp-enabled").checked = mcp.enabled === true;
    $("#key-mcp-mode").value = mcp.mode || "allow_all";
    $("#key-mcp-servers").value = (mcp.servers || []).join(", ");
    $("#key-mcp-tools").value = Object.entries(mcp.tools || {}).flatMap(([server, tools]) => tools.map((t) => server + ":" + t)).join(", ");
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
  const ADVANCED = new Set(["key-scope", "key-endpoints", "key-ips", "key-metadata", "key-mcp", "key-mcp-mode", "key-mcp-servers", "key-mcp-tools"]);
  // The API names only `mcp`; its message ("mcp: servers must be …") says which control.
  function mcpField(message) {
    const m = /^mcp: (enabled|mode|servers|tools)\b/.exec(message || "");
    return m && m[1] !== "enabled" ? "key-mcp-" + m[1] : "key-mcp";
  }
  function showError(fieldId, message) {
    selectTab(ADVANCED.has(fieldId) ? "advanced" : "basic");
    if (fieldError(form, fieldId, message)) $('[data-field="' + fieldId + '"]', form).scrollIntoView({ block: "nearest" });
    return null;
  }

  // The `mcp` object; null when nothing is set (no MCP settings), undefined after showing
  // a problem. Tools are written server:tool and sent as { server: [tools] }.
  function mcpValue() {
    const enabled = $("#key-mcp-enabled").checked, mode = $("#key-mcp-mode").value;
    const servers = list($("#key-mcp-servers").value), tools = {};
    for (const entry of list($("#key-mcp-tools").value)) {
      const cut = entry.indexOf(":"), server = entry.slice(0, cut).trim(), tool = entry.slice(cut + 1).trim();
      if (cut < 0 || !server || !tool) { showError("key-mcp-tools", "Write each tool as server:tool, e.g. github:create_issue."); return undefined; }
      tools[server] = tools[server] || [];
      if (!tools[server].includes(tool)) tools[server].push(tool);
    }
    if (!enabled && mode === "allow_all" && !servers.length && !Object.keys(tools).length) return null;
    return { enabled, mode, servers, tools };
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
    const mcp = mcpValue();
    if (mcp === undefined) return null;
    if (mcp !== null || edit) b.mcp = mcp;
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
      const fieldId = err.param === "mcp" ? mcpField(err.message) : err.param && PARAM_FIELD[err.param];
      if (fieldId) showError(fieldId, err.message); else formError(form, err.message);
    } finally { submit.disabled = false; }
  });

  // For the detail dialog (keys_detail.js, served right after this file).
  T.keys = { showSecret, openEdit, NOT_AGAIN };
})();
