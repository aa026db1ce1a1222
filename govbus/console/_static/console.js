// Live updates without reloading: fetch the page's live part every refresh and swap it in.
(function () {
  "use strict";
  const main = document.getElementById("live");
  const status = document.getElementById("live-status");
  if (!main || main.dataset.live !== "1") return;
  const every = Math.max(500, parseInt(main.dataset.refresh || "2000", 10));
  async function tick() {
    const focused = document.activeElement;
    if (focused && main.contains(focused) && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName)) {
      setTimeout(tick, every); // the operator is typing a search: do not swap the form away
      return;
    }
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (resp.ok) {
        main.innerHTML = await resp.text();
        if (status) status.textContent = "live: updated " + new Date().toLocaleTimeString();
      } else if (status) {
        status.textContent = "live: the console answered " + resp.status;
      }
    } catch (err) {
      if (status) status.textContent = "live: the console cannot be reached";
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
})();
