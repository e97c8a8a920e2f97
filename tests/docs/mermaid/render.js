// Loaded by the page tests/docs/test_flow_map_renders.py writes, after mermaid's dist bundle:
// renders each diagram of the page's JSON list (<script id="diagrams">) into <div id="diagram-N">,
// then sets <body data-state> to "rendered", or to "failed" with the error in <pre id="error">.
"use strict";

function fail(error) {
  const pre = document.createElement("pre");
  pre.id = "error";
  pre.textContent = String((error && error.stack) || error);
  document.body.appendChild(pre);
  document.body.dataset.state = "failed";
}

window.addEventListener("error", (event) => fail(event.error || event.message));
window.addEventListener("unhandledrejection", (event) => fail(event.reason));

(async () => {
  try {
    if (typeof mermaid === "undefined") {
      throw new Error("mermaid's bundle did not load");
    }
    mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
    const diagrams = JSON.parse(document.getElementById("diagrams").textContent);
    for (const [index, text] of diagrams.entries()) {
      const { svg } = await mermaid.render(`diagram${index}`, text);
      const holder = document.createElement("div");
      holder.id = `diagram-${index}`;
      holder.innerHTML = svg;
      document.body.appendChild(holder);
    }
    document.body.dataset.state = "rendered";
  } catch (error) {
    fail(error);
  }
})();
