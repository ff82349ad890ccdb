// Tollgate dashboard, Teams page (served after app.js, in the same file): the team dialog
// (Create, and Edit prefilled from the team's data-team), adding and removing team
// members, and owners' role pickers in the Members panel. Every change goes through
// /api/v1/teams... or /api/v1/users/{id} with the page's CSRF token (app.js's api()).
"use strict";
(function () {
  const T = window.Tollgate;
  if (!T) return;
  const { $, $$, api, toast, clearErrors, fieldError, formError, openDialog } = T;

  // ---- The team dialog: Create, and Edit ------------------------------------------------
  const teamDialog = $("#team-dialog");
  if (teamDialog) {
    const form = $("#team-form");
    let editing = null;
    const text = (v) => (v === null || v === undefined ? "" : String(v));
    function openTeam(t) {
      editing = t || null; form.reset(); clearErrors(form);
      $("#team-title").textContent = t ? "Edit " + t.name : "Create team";
      $("#team-submit").textContent = t ? "Save changes" : "Create team";
      if (t) {
        $("#team-name").value = t.name;
        $("#team-models").value = (t.allowed_models || []).join(", ");
        $("#team-budget").value = text(t.budget_usd);
        $("#team-rpm").value = text(t.rpm);
        $("#team-tpm").value = text(t.tpm);
        $("#team-quota").value = text(t.token_quota);
      }
      openDialog(teamDialog); $("#team-name").focus();
    }
    $$("#open-team-create, [data-open-team-create]").forEach((b) => b.addEventListener("click", () => openTeam(null)));
    $$(".edit-team").forEach((b) => b.addEventListener("click", () => {
      try { openTeam(JSON.parse(b.dataset.team)); } catch (_) { toast("This team cannot be edited here; reload the page."); }
    }));
    const TEAM_FIELD = { name: "team-name", allowed_models: "team-models", budget_usd: "team-budget", rpm: "team-rpm", tpm: "team-tpm", token_quota: "team-quota" };
    // Create sends what is set; Edit sends every field, so that an emptied one is cleared.
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault(); clearErrors(form);
      const edit = editing !== null;
      const body = { name: $("#team-name").value.trim() };
      if (!body.name) return fieldError(form, "team-name", "Give the team a name.");
      const models = $("#team-models").value.split(/[\n,]/).map((x) => x.trim()).filter(Boolean);
      if (models.length || edit) body.allowed_models = models;
      const budget = $("#team-budget").value.trim();
      if (budget !== "") {
        const b = Number(budget);
        if (!(b > 0)) return fieldError(form, "team-budget", "A budget in USD greater than 0, or empty.");
        body.budget_usd = b;
      } else if (edit) { body.budget_usd = null; }
      for (const [id, key] of [["team-rpm", "rpm"], ["team-tpm", "tpm"], ["team-quota", "token_quota"]]) {
        const raw = $("#" + id).value.trim();
        if (raw === "") { if (edit) body[key] = null; continue; }
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 1) return fieldError(form, id, "A whole number of at least 1, or empty for unlimited.");
        body[key] = n;
      }
      const submit = $("#team-submit"); submit.disabled = true;
      try {
        if (edit) await api("PATCH", "/teams/" + encodeURIComponent(editing.id), body); else await api("POST", "/teams", body);
        location.reload();
      } catch (err) {
        const f = err.param && TEAM_FIELD[err.param];
        if (f) fieldError(form, f, err.message); else formError(form, err.message);
      } finally { submit.disabled = false; }
    });
  }

  // ---- Team members ---------------------------------------------------------------------
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

  // ---- Roles (owners): applied on change; a refusal shows under the picker, which reverts.
  $$("select.role-select").forEach((sel) => sel.addEventListener("change", async () => {
    const row = sel.closest("tr"), field = sel.closest(".field"), role = sel.value;
    clearErrors(row); sel.removeAttribute("aria-invalid");
    try {
      await api("PATCH", "/users/" + encodeURIComponent(row.dataset.userId), { role });
      sel.dataset.current = role; row.dataset.role = role;
      // The teams' "Add member" pickers name each person's role too.
      $$("form.add-member option").filter((o) => o.value === row.dataset.userId)
        .forEach((o) => { o.textContent = row.dataset.email + " (" + role + ")"; });
      // Changing one's own role changes what this page may show.
      if (row.dataset.self) { location.reload(); return; }
      toast(row.dataset.email + " is now " + ({ owner: "an owner", admin: "an admin" }[role] || "a member") + ".");
    } catch (err) {
      sel.value = sel.dataset.current;
      fieldError(row, field.dataset.field, err.message);
    }
  }));
})();
