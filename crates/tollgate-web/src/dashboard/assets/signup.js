// Tollgate sign-up page and the Teams page's invitations: the forms post to the JSON API
// (/api/v1/auth/signup, /api/v1/invites) and show each error next to its field.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const csrf = () => { const m = $('meta[name="csrf-token"]'); return m ? m.content : ""; };

  function clearErrors(root) {
    $$(".field.invalid", root).forEach((f) => f.classList.remove("invalid"));
    $$("[aria-invalid]", root).forEach((i) => i.removeAttribute("aria-invalid"));
    $$(".field-error, .form-error", root).forEach((e) => { e.textContent = ""; e.hidden = true; });
  }
  // Shows `message` under the field `name` (its data-field); false when there is none.
  function fieldError(root, name, message) {
    const field = $('[data-field="' + name + '"]', root);
    if (!field) return false;
    field.classList.add("invalid");
    const e = $(".field-error", field); e.textContent = message; e.hidden = false;
    const input = $("input, select", field);
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
    return true;
  }
  function formError(box, message) { box.textContent = message; box.hidden = false; }
  async function answer(res) {
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    const err = (data && data.error) || {};
    return { data, message: err.message || ("Request failed (" + res.status + ")"), param: err.param };
  }
  // "email: is not an email address" → "is not an email address", capitalised.
  function bare(message, param) {
    const m = param && message.startsWith(param + ": ") ? message.slice(param.length + 2) : message;
    return m.charAt(0).toUpperCase() + m.slice(1);
  }

  // ---- Sign-up --------------------------------------------------------------------------
  const signup = $("#signup-form");
  if (signup) signup.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const card = signup.parentElement, box = $("#signup-error");
    clearErrors(card);
    const value = (id) => { const i = $("#" + id); return i ? i.value.trim() : ""; };
    const body = { email: value("signup-email"), password: $("#signup-password").value };
    if (!body.email) return fieldError(signup, "email", "Enter your email.");
    if (body.password.length < 12) return fieldError(signup, "password", "Use at least 12 characters.");
    if ($("#signup-invite")) {
      body.invite = value("signup-invite");
      if (!body.invite) return fieldError(signup, "invite", "Paste your invitation.");
    }
    if (value("signup-name")) body.name = value("signup-name");
    const button = $("#signup-submit"); button.disabled = true;
    try {
      const res = await fetch("/api/v1/auth/signup", { method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      if (res.ok) { location.href = "/dashboard"; return; }
      const { message, param } = await answer(res);
      if (res.status === 409) { fieldError(signup, "email", "An account with this email already exists; sign in instead."); return; }
      if (res.status === 429) { formError(box, "Too many failed attempts from this address. Try again later."); return; }
      if (!(param && fieldError(signup, param, bare(message, param)))) formError(box, message);
    } catch (_) {
      formError(box, "The server could not be reached.");
    } finally { button.disabled = false; }
  });

  // ---- Invitations (Teams page) ---------------------------------------------------------
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "x-csrf-token": csrf() } };
    if (body !== undefined) { init.headers["content-type"] = "application/json"; init.body = JSON.stringify(body); }
    const res = await fetch("/api/v1" + path, init);
    if (res.ok) return res.status === 204 ? null : res.json();
    const err = await answer(res); err.status = res.status;
    throw err;
  }
  const FIELD = { email: "invite-email", role: "invite-role", team_id: "invite-team" };
  const invite = $("#invite-form");
  if (invite) invite.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const panel = invite.closest("section");
    clearErrors(panel);
    $("#invite-created").hidden = true;
    const body = { role: $("#invite-role").value };
    const email = $("#invite-email").value.trim(), team = $("#invite-team").value;
    if (email) body.email = email;
    if (team) body.team_id = team;
    const button = $("#invite-submit"); button.disabled = true;
    try {
      const created = await api("POST", "/invites", body);
      $("#invite-link").textContent = location.origin + created.url;
      $("#invite-created").hidden = false;
      invite.reset();
    } catch (e) {
      if (!(e.param && fieldError(invite, FIELD[e.param] || e.param, bare(e.message, e.param)))) {
        formError($(".form-error", panel), e.message || "The invitation could not be created.");
      }
    } finally { button.disabled = false; }
  });
  const copy = $("#invite-copy");
  if (copy) copy.addEventListener("click", async () => {
    const text = $("#invite-link").textContent;
    try { await navigator.clipboard.writeText(text); copy.lastChild.textContent = "Copied"; }
    catch (_) { window.getSelection().selectAllChildren($("#invite-link")); }
  });
  $$(".revoke-invite").forEach((b) => b.addEventListener("click", async () => {
    const row = b.closest("[data-invite-id]");
    if (!confirm("Revoke this invitation? Its link stops working.")) return;
    b.disabled = true;
    try { await api("DELETE", "/invites/" + encodeURIComponent(row.dataset.inviteId)); row.remove(); }
    catch (e) { b.disabled = false; formError($("#invites .form-error"), e.message || "Revoking failed."); }
  }));
})();
