"""Reports to files: one self-contained HTML file (Jinja2 templates, CSS and images inline) and
a PDF of the same HTML (WeasyPrint).

Nothing in a report refers to the outside world: images are ``data:`` URIs, styles are inline,
and the PDF renderer is given a URL fetcher that refuses everything but ``data:`` URIs, so a
stray reference fails loudly instead of being fetched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..store import write_bytes, write_text

#: Package holding the templates (shipped inside the wheel).
_TEMPLATES = "ctcdyn.report"


class MissingDependencyError(ImportError):
    """An optional dependency of reports is not installed."""


def _environment():
    try:
        import jinja2
    except ImportError as err:  # pragma: no cover - jinja2 comes with the report extra
        raise MissingDependencyError("reports need jinja2: pip install 'ctcdyn[report]'") from err
    return jinja2.Environment(
        loader=jinja2.PackageLoader(_TEMPLATES, "templates"),
        autoescape=jinja2.select_autoescape(("html", "j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: Any, template: str) -> str:
    """The report (a dataclass) rendered with ``template`` (``patient.html.j2`` or
    ``cohort.html.j2``) into one self-contained HTML document."""
    env = _environment()
    css = env.loader.get_source(env, "report.css")[0]  # type: ignore[union-attr]
    fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    return env.get_template(template).render(css=css, **fields)


def _data_only_fetcher(weasyprint: Any) -> Any:
    """A URL fetcher that loads ``data:`` URIs and stops the rendering on anything else."""
    fetcher = getattr(weasyprint, "URLFetcher", None)
    if fetcher is not None:  # WeasyPrint >= 67
        return fetcher(allowed_protocols=("data",), fail_on_errors=True)

    def legacy(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if not url.startswith("data:"):
            raise ValueError(f"a report must not load external resources; refused {url!r}")
        return weasyprint.default_url_fetcher(url, *args, **kwargs)

    return legacy


def html_to_pdf(html: str) -> bytes:
    """PDF bytes of a self-contained HTML report (WeasyPrint; A4, page numbers in the footer).

    Raises:
        MissingDependencyError: WeasyPrint (or the Pango library it needs) is not installed.
    """
    try:
        import weasyprint
    except (ImportError, OSError) as err:
        raise MissingDependencyError(
            "PDF reports need WeasyPrint and the Pango library: pip install 'ctcdyn[report]' "
            "and, on Debian/Ubuntu, apt-get install libpango-1.0-0 libpangoft2-1.0-0 "
            f"({type(err).__name__}: {err}). The HTML report works without them."
        ) from err
    document = weasyprint.HTML(string=html, url_fetcher=_data_only_fetcher(weasyprint))
    return document.write_pdf()


def write_report(
    report: Any, template: str, out: Path, stem: str, formats: list[str]
) -> dict[str, Path]:
    """Write ``report`` into folder ``out`` as ``stem.html`` and/or ``stem.pdf`` (atomically)."""
    unknown = set(formats) - {"html", "pdf"}
    if unknown or not formats:
        raise ValueError(f"formats must be among html, pdf; got {formats!r}")
    html = render_html(report, template)
    pdf = html_to_pdf(html) if "pdf" in formats else None  # before writing anything
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "html" in formats:
        written["html"] = write_text(out / f"{stem}.html", html)
    if pdf is not None:
        written["pdf"] = write_bytes(out / f"{stem}.pdf", pdf)
    return written
