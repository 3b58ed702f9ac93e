// tfp: GX's Data Docs pages call a few page functions from onclick attributes, which a
// Content-Security-Policy without 'unsafe-inline' blocks. tfp's build rewrites each one to
// data-tfp-on / data-tfp-call / data-tfp-arg; this attaches them. Only these functions are called.
(function () {
  "use strict";
  var allowed = ["clearTableFilters", "hideSucceededValidations", "showAllValidations"];
  function attach() {
    var elements = document.querySelectorAll("[data-tfp-call]");
    Array.prototype.forEach.call(elements, function (el) {
      var name = el.getAttribute("data-tfp-call");
      if (allowed.indexOf(name) < 0) { return; }
      el.addEventListener(el.getAttribute("data-tfp-on") || "click", function () {
        var fn = window[name];
        if (typeof fn !== "function") { return; }
        if (el.hasAttribute("data-tfp-arg")) { fn.call(el, el.getAttribute("data-tfp-arg")); }
        else { fn.call(el); }
      });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", attach); }
  else { attach(); }
})();
