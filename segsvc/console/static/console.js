// segsvc console: small enhancements over pages that work without any script.
"use strict";

// The filter box narrows the table as one types (the form filters on the server without script).
function setUpFilter(input) {
  const table = document.getElementById(input.dataset.filters);
  if (!table) return;
  input.addEventListener("input", () => {
    const wanted = input.value.trim().toLowerCase();
    for (const row of table.tBodies[0].rows) {
      const text = (row.dataset.filterText || "").toLowerCase();
      row.hidden = row.dataset.filterText !== undefined && !text.includes(wanted);
    }
  });
}

// A rollout's progress, polled while it converges.
function watchRollout(block) {
  const bar = block.querySelector("progress");
  const text = block.querySelector(".progress-text");
  const memberCount = document.getElementById("member-count");
  const poll = async () => {
    let progress;
    try {
      const response = await fetch(block.dataset.rolloutUrl, { credentials: "same-origin" });
      if (!response.ok || !response.headers.get("Content-Type").includes("json")) throw new Error();
      progress = await response.json();
    } catch (error) {
      setTimeout(poll, 5000);
      return;
    }
    block.dataset.state = progress.state;
    bar.value = progress.done_percent;
    bar.textContent = progress.done_percent + "%";
    if (memberCount) memberCount.textContent = progress.member_count.toLocaleString("en-US");
    if (progress.state === "done") {
      text.textContent = "Done: at " + progress.target_percent;
      return;
    }
    text.textContent = "Converging to " + progress.target_percent + ": " + progress.done_percent +
      "% of registered users reached, " + progress.users_left.toLocaleString("en-US") + " left";
    setTimeout(poll, 1000);
  };
  if (block.dataset.state !== "done") setTimeout(poll, 1000);
}

// A button that stays disabled until a field holds the expected text (delete asks for the slug).
function guardButton(input) {
  const button = document.getElementById(input.dataset.enables);
  if (!button) return;
  const update = () => { button.disabled = input.value.trim() !== input.dataset.mustEqual; };
  input.addEventListener("input", update);
  update();
}

// The report form shows the fields of the period kind chosen.
function setUpPeriods(form) {
  const groups = form.querySelectorAll("[data-period]");
  const update = () => {
    const chosen = form.querySelector("input[name=period]:checked");
    for (const group of groups) group.hidden = chosen && group.dataset.period !== chosen.value;
  };
  form.addEventListener("change", update);
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-filters]").forEach(setUpFilter);
  document.querySelectorAll("[data-rollout-url]").forEach(watchRollout);
  document.querySelectorAll("[data-must-equal]").forEach(guardButton);
  const reportForm = document.getElementById("report-form");
  if (reportForm) setUpPeriods(reportForm);
  const problem = document.querySelector(".problem");
  if (problem) { problem.tabIndex = -1; problem.focus(); }
});
