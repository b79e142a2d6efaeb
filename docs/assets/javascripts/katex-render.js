// Renders the TeX that pymdownx.arithmatex (generic mode) leaves in the page: \( … \) in a
// span.arithmatex is inline math, \[ … \] in a div.arithmatex is display math. KaTeX comes from
// this site (assets/katex, see scripts/vendor-katex.sh). A formula KaTeX cannot parse is
// reported as a console error (the docs' browser test fails on any), marked
// data-katex="error" and left as TeX.
(function () {
  "use strict";

  function strip(tex, open, close) {
    tex = tex.trim();
    if (tex.startsWith(open) && tex.endsWith(close)) {
      return tex.slice(open.length, tex.length - close.length);
    }
    return tex;
  }

  function render(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.katex === "done") {
        return;
      }
      const display = el.tagName === "DIV";
      const tex = display ? strip(el.textContent, "\\[", "\\]")
        : strip(el.textContent, "\\(", "\\)");
      try {
        katex.render(tex, el, { displayMode: display, throwOnError: true, strict: "error" });
        el.dataset.katex = "done";
      } catch (err) {
        el.dataset.katex = "error";
        console.error("KaTeX could not render " + JSON.stringify(tex) + ": " + err.message);
      }
    });
  }

  // The search results quote the pages' text, TeX delimiters included: render what they quote
  // (a formula cut off by the excerpt stays text).
  function renderSearchResults() {
    const list = document.querySelector(".md-search-result__list");
    if (!list || typeof renderMathInElement === "undefined") {
      return;
    }
    // The observer stops watching while it typesets: the nodes KaTeX inserts are mutations of
    // the list too, and would otherwise call it again for its own work.
    const watch = { childList: true, subtree: true };
    const observer = new MutationObserver(function () {
      observer.disconnect();
      renderMathInElement(list, {
        delimiters: [
          { left: "\\[", right: "\\]", display: false },
          { left: "\\(", right: "\\)", display: false },
        ],
        ignoredClasses: ["katex"],
        throwOnError: false,
      });
      observer.observe(list, watch);
    });
    observer.observe(list, watch);
  }

  document.addEventListener("DOMContentLoaded", renderSearchResults);

  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { render(document.body); });  // Material's page-load stream
  } else {
    document.addEventListener("DOMContentLoaded", function () { render(document.body); });
  }
})();
