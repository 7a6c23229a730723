// MathJax settings for pymdownx.arithmatex (generic mode): \( \) inline, \[ \] and $$ $$ blocks.
// MathJax itself is vendored (vendor/mathjax/tex-svg.js: MathJax 3.2.2, `npm pack mathjax@3.2.2`,
// file es5/tex-svg.js, Apache-2.0, licence beside it), so neither the docs build nor a reader
// of the site needs the network. The SVG output carries its glyphs, so no font files are
// fetched; only the TeX packages bundled in that file (base, ams, newcommand, ...) are
// available: a macro that would autoload another package fails offline.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  svg: {
    fontCache: "global",
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Typeset again after material's instant navigation replaces the page.
document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
