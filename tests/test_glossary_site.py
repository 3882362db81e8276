"""The glossary site: `/glossary/` and `/glossary/<slug>` served by the app and written by
`digest build`, in the seed page's shape, escaped, cacheable, every link leading somewhere real;
and `DIGEST_SITE_URL`, which now defaults to these pages.

The pages read no database: the served tests run on SQLite only (`SQLITE_ONLY`); the test of the
mail's link builds and stores an issue, and runs on both backends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.campaign.build import build_issue, build_site
from digest.campaign.site import write_glossary_site
from digest.cli import app as cli_app
from digest.config import Settings, get_settings
from digest.core.glossary_pages import (
    category_anchors,
    render_index,
    render_site,
    render_term_page,
    search_script,
)
from digest.model.weeks import IsoWeek
from digest.store.terms import load_glossary
from digest.web import create_app
from tests.conftest import STARTER_TERMS, term_text

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
WEEK = IsoWeek(2026, 48)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'


# --------------------------------------------------------------------------- reading pages


class Node:
    """An element of a parsed page: its tag, attributes, children and text, as a browser sees."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join("".join(parts).split())

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                wanted = tag is None or child.tag == tag
                if wanted and all(child.attrs.get(_attr(k)) == v for k, v in attrs.items()):
                    found.append(child)
                found.extend(child.all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        [found] = self.all(tag, **attrs)
        return found


def _attr(keyword: str) -> str:
    """`class_` → class, `aria_label` → aria-label, `data_term` → data-term."""
    return keyword.rstrip("_").replace("_", "-")


_VOID = {"meta", "link", "input", "br", "img", "hr", "source", "wbr"}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self._at = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self._at)
        self._at.children.append(node)
        if tag not in _VOID:
            self._at = node

    def handle_endtag(self, tag: str) -> None:
        at: Node | None = self._at
        while at is not None and at.tag != tag:
            at = at.parent
        if at is not None and at.parent is not None:
            self._at = at.parent

    def handle_data(self, data: str) -> None:
        self._at.children.append(data)


def parse(html: str) -> Node:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    return tree.root


def jsonld(page: Node) -> Any:
    [block] = page.all("script", type="application/ld+json")
    return json.loads(block.text)


def links(page: Node) -> list[tuple[str, str]]:
    """(method, URL) of every link, form and linked resource on the page."""
    found = [("GET", n.attrs["href"]) for n in page.all() if n.tag in ("a", "link")]
    found += [("GET", n.attrs["src"]) for n in page.all() if "src" in n.attrs]
    found += [(n.attrs.get("method", "get").upper(), n.attrs["action"]) for n in page.all("form")]
    return found


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def own(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with `DIGEST_SITE_URL` unset: the term links lead to digest's own pages."""
    monkeypatch.delenv("DIGEST_SITE_URL")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def site(own: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(own)) as client:
        yield client


def path_of(settings: Settings, url: str) -> str:
    assert url.startswith(settings.base_url + "/"), url
    return url.removeprefix(settings.base_url)


def hostile_terms() -> dict[str, str]:
    """Two related terms whose every text field carries markup, quotes and ampersands."""
    evil: dict[str, Any] = {
        "title": f"Evil {SCRIPT} & 'co'",
        "summary": f'Summary {BREAKOUT} & "quoted"',
        "definition": f"Definition {SCRIPT} {BREAKOUT} & more </script>",
        "aliases": [{"name": BREAKOUT}, {"name": "Alias & <b>bold</b>", "lang": "nl"}],
        "category": f"Cat {SCRIPT}",
        "difficulty": "beginner",
        "added": "2026-W10",
        "related": ["other"],
        "sources": [{"title": f"Source {SCRIPT}", "url": 'https://example.org/a?b=1&c="><x>'}],
    }
    other = dict(evil, title=f"Other {BREAKOUT}", aliases=[], related=["evil"])
    body = (
        f"## Why it matters\n\n{SCRIPT}\n\n[click me](javascript:alert(1))\n\n"
        f"## How it works\n\nInline `{SCRIPT}` and *{BREAKOUT}*\n\n"
        f"## Example\n\n```\n{SCRIPT}\n```\n"
    )
    return {
        slug: f"---\n{yaml.safe_dump(front, allow_unicode=True, sort_keys=False)}---\n\n{body}"
        for slug, front in (("evil", evil), ("other", other))
    }


# --------------------------------------------------------------------------- the index


@SQLITE_ONLY
def test_the_index_lists_every_term_under_its_category_with_level_and_one_liner(site, own):
    glossary = load_glossary(STARTER_TERMS)
    answer = site.get("/glossary/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = parse(answer.text)
    anchors = category_anchors(glossary.categories())
    sections = page.all("section", data_category="")
    assert [s.attrs["id"] for s in sections] == [
        anchors[c] for c in sorted(anchors, key=str.casefold)
    ]
    listed = 0
    for section in sections:
        category = section.one("h2").text
        terms = sorted(glossary.in_category(category), key=lambda t: t.title.casefold())
        items = section.all("li", data_term="")
        assert [i.one("a").text for i in items] == [t.title for t in terms]
        for item, term in zip(items, terms, strict=True):
            assert item.one("a").attrs["href"] == f"{own.base_url}/glossary/{term.slug}"
            assert item.one("p").text == term.summary
            assert item.one("span").text == term.difficulty.capitalize()
        # The category navigation links to the heading.
        assert page.one("a", href=f"#{section.attrs['id']}")
        listed += len(items)
    assert listed == len(glossary) == 66
    assert page.one("link", rel="canonical").attrs["href"] == f"{own.base_url}/glossary/"
    data = jsonld(page)
    assert data["@type"] == "DefinedTermSet"
    assert len(data["hasDefinedTerm"]) == 66


@SQLITE_ONLY
def test_the_search_is_hidden_without_script_and_its_script_is_allowed_by_hash(site, own):
    answer = site.get("/glossary/")
    page = parse(answer.text)
    assert "hidden" in page.one("form", id="glossary-search").attrs
    [script] = [s for s in page.all("script") if "type" not in s.attrs]
    assert "nonce" not in script.attrs
    source = search_script(own)
    assert answer.text.count(f"<script>{source}</script>") == 1
    digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
    policy = answer.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}';" in policy
    # Nothing else loosened: the app's policy otherwise.
    assert "'self'" not in policy.split("script-src")[1].split(";")[0]
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert policy.startswith("default-src 'none'; ") and "frame-ancestors 'none'" in policy


# --------------------------------------------------------------------------- a term's page


@SQLITE_ONLY
def test_a_term_page_has_every_part_of_the_seed_page(site, own):
    base = own.base_url
    answer = site.get("/glossary/foundation-model")
    assert answer.status_code == 200
    page = parse(answer.text)

    crumbs = page.one("nav", aria_label="Breadcrumb").all("a")
    assert [c.text for c in crumbs] == [
        "Home",
        "Glossary",
        "Models & Architecture",
        "Foundation Model",
    ]
    assert [c.attrs["href"] for c in crumbs] == [
        f"{base}/",
        f"{base}/glossary/",
        f"{base}/glossary/#models-architecture",
        f"{base}/glossary/foundation-model",
    ]
    assert crumbs[-1].attrs["aria-current"] == "page"

    facts = page.one("p", class_="facts")
    assert facts.one("a").text == "Models & Architecture"
    assert "Intermediate" in facts.text
    assert facts.one("time").attrs["datetime"] == "2026-W17"
    assert page.one("h1").text == "Foundation Model"
    assert page.one("p", class_="lead").text.startswith(
        "A foundation model is a large AI model pre-trained on broad data at scale"
    )

    aka = page.one("div", class_="aka")
    assert aka.one("p").text == "Also known as"
    names = [li.text for li in aka.all("li")]
    assert names == ["FM", "basismodel (Dutch)"]
    assert aka.one("span", lang="nl").text == "basismodel"

    headings = [h.text for h in page.one("article").all("h2")]
    assert headings == ["Why it matters", "How it works", "Example", "Sources", "Related concepts"]
    how = page.one("article").all("section")[1]
    assert how.one("ol").all("li")[0].all("strong")[0].text == "Pre-training"

    sources = page.one("ol", class_="sources").all("a")
    assert [s.attrs["href"] for s in sources] == [
        "https://arxiv.org/abs/2108.07258",
        "https://www.anthropic.com/news/core-views-on-ai-safety",
    ]
    related = page.one("ul", class_="related").all("li")
    assert related[0].one("a").attrs["href"] == f"{base}/glossary/large-language-model"
    assert related[0].one("p").text.startswith("A neural network with billions of parameters")
    # The editor's whole list, in its order.
    assert len(related) == 6

    pager = page.one("nav", class_="pager")
    assert pager.one("a", rel="prev").text == "Previous FlashAttention"
    assert pager.one("a", rel="prev").attrs["href"] == f"{base}/glossary/flash-attention"
    assert pager.one("a", rel="next").text == "Next Function Calling"

    subscribe = page.one("aside", class_="subscribe")
    assert subscribe.one("h2").text == "Subscribe to the newsletter"
    form = subscribe.one("form")
    assert (form.attrs["method"], form.attrs["action"]) == ("post", f"{base}/subscribe")
    assert form.one("input", type="email").attrs["name"] == "email"
    assert subscribe.one("a").attrs["href"] == f"{base}/"

    assert page.one("link", rel="canonical").attrs["href"] == f"{base}/glossary/foundation-model"
    data = jsonld(page)
    term, crumbs_ld = data["@graph"]
    assert term["@type"] == "DefinedTerm" and term["name"] == "Foundation Model"
    assert term["url"] == f"{base}/glossary/foundation-model"
    assert term["description"].startswith("A foundation model is a large AI model")
    assert term["alternateName"] == ["FM", {"@value": "basismodel", "@language": "nl"}]
    assert term["inDefinedTermSet"]["url"] == f"{base}/glossary/"
    assert [i["name"] for i in crumbs_ld["itemListElement"]] == [
        "AI Term of the Week",
        "Glossary",
        "Models & Architecture",
        "Foundation Model",
    ]


def test_the_first_and_last_terms_have_only_the_neighbour_they_have(make_terms):
    settings = Settings(base_url="https://d.example.org")
    glossary = load_glossary(
        make_terms(
            {
                "b-term": term_text("beta", related=["a-term"]),
                "a-term": term_text("Alpha", related=["b-term", "c-term"]),
                "c-term": term_text("Gamma", related=["a-term"]),
            }
        )
    )
    first = parse(render_term_page(settings, glossary, "a-term") or "").one("nav", class_="pager")
    assert first.all("a", rel="prev") == [] and first.one("a", rel="next").text == "Next beta"
    last = parse(render_term_page(settings, glossary, "c-term") or "").one("nav", class_="pager")
    assert last.all("a", rel="next") == [] and last.one("a", rel="prev").text == "Previous beta"
    assert render_term_page(settings, glossary, "d-term") is None


def test_hostile_term_text_stays_text_on_every_page(make_terms):
    settings = Settings(base_url="https://d.example.org")
    glossary = load_glossary(make_terms(hostile_terms()))
    pages = render_site(settings, glossary)
    assert set(pages) == {
        "glossary/index.html",
        "glossary/evil/index.html",
        "glossary/other/index.html",
    }
    for name, html in pages.items():
        page = parse(html)
        assert not [n for n in page.all() if any(a.startswith("on") for a in n.attrs)], name
        assert not page.all("img") and not page.all("b"), name
        hrefs = [url for _, url in links(page)]
        assert not [u for u in hrefs if u.replace(" ", "").lower().startswith("javascript:")]
        scripts = page.all("script")
        # Only the structured data and (on the index) the search script; the data block
        # cannot be closed early by a term's `</script>`.
        assert [s.attrs.get("type") for s in scripts] in (
            ["application/ld+json"],
            ["application/ld+json", None],
        ), name
        assert "<" not in scripts[0].text
        assert "alert" not in "".join(s.text for s in scripts[1:])
        json.loads(scripts[0].text)
    term = parse(pages["glossary/evil/index.html"])
    assert term.one("h1").text == f"Evil {SCRIPT} & 'co'"
    assert term.one("p", class_="lead").text == f"Definition {SCRIPT} {BREAKOUT} & more </script>"
    assert term.one("span", lang="nl").text == "Alias & <b>bold</b>"
    assert jsonld(term)["@graph"][0]["name"] == f"Evil {SCRIPT} & 'co'"
    assert "&amp;amp;" not in pages["glossary/evil/index.html"]  # escaped once, not twice
    index = parse(pages["glossary/index.html"])
    assert index.one("section", data_category="").one("h2").text == f"Cat {SCRIPT}"
    assert (
        index.all("li", data_term="")[0].attrs["data-names"]
        == f"evil {BREAKOUT} Alias & <b>bold</b>"
    )


@SQLITE_ONLY
def test_an_unknown_term_is_the_apps_404_page(site):
    for answer in (site.get("/glossary/no-such-term"), site.head("/glossary/no-such-term")):
        assert answer.status_code == 404
        assert answer.headers["cache-control"] == "no-store"
    assert "There is no page at this address." in site.get("/glossary/no-such-term").text


@SQLITE_ONLY
def test_another_name_of_a_term_moves_permanently_to_its_page(site, own):
    for name in ("LLM", "Large-Language-Model", "groot%20taalmodel"):
        answer = site.get(f"/glossary/{name}", follow_redirects=False)
        assert answer.status_code == 301, name
        assert answer.headers["location"] == f"{own.base_url}/glossary/large-language-model"


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/glossary/", "/glossary/foundation-model"])
def test_head_answers_as_get_does_without_a_body(site, path):
    got, head = site.get(path), site.head(path)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "cache-control", "content-type", "content-length"):
        assert head.headers[name] == got.headers[name], name


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/glossary/", "/glossary/foundation-model"])
def test_pages_are_public_and_conditional(site, path):
    first = site.get(path)
    assert first.headers["cache-control"] == "public, max-age=300"
    etag = first.headers["etag"]
    assert etag.startswith('"') and site.get(path).headers["etag"] == etag
    for sent in (etag, f"W/{etag}", "*"):
        again = site.get(path, headers={"If-None-Match": sent})
        assert again.status_code == 304 and again.content == b"", sent
        assert again.headers["etag"] == etag
    assert site.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


@SQLITE_ONLY
def test_every_link_on_every_glossary_page_leads_to_a_page_that_exists(site, own):
    """From the index, every page the glossary links to: each of our addresses answers 200
    (a form's POST is answered, not 404 or 405), every #fragment names an id on its page, and
    every other link is an absolute https address (the sources)."""
    seen: dict[str, Node] = {}
    queue = [f"{own.base_url}/glossary/"]
    checked_posts: set[str] = set()
    fragments: list[tuple[str, str, str]] = []
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        answer = site.get(path_of(own, url), follow_redirects=False)
        assert answer.status_code == 200, url
        page = seen[url] = parse(answer.text)
        if not urlsplit(url).path.startswith("/glossary/"):
            continue  # the subscribe page, the feeds: they exist; their links are not ours
        for method, link in links(page):
            target, fragment = urldefrag(link)
            target = target or url
            if not target.startswith(own.base_url):
                assert urlsplit(target).scheme == "https", (url, link)
                continue
            if method == "POST":
                if target not in checked_posts:
                    posted = site.post(path_of(own, target), data={"email": "not an address"})
                    assert posted.status_code == 422, (url, link)  # the form's own answer
                    checked_posts.add(target)
                continue
            if fragment:
                fragments.append((url, target, fragment))
            queue.append(target)
    for url, target, fragment in fragments:
        ids = {n.attrs["id"] for n in seen[target].all() if "id" in n.attrs}
        assert fragment in ids, (url, target, fragment)
    assert len([u for u in seen if "/glossary/" in u]) == 67  # the index and every term
    assert checked_posts == {f"{own.base_url}/subscribe"}


# --------------------------------------------------------------------------- the static build


def test_build_writes_every_glossary_page_as_the_app_serves_it(own, engine, tmp_path):
    glossary = load_glossary(STARTER_TERMS)
    out = tmp_path / "build"
    built = build_site(engine, own, glossary, WEEK, out, now=NOW, rebuild=False)
    pages = {p.relative_to(out).as_posix() for p in built.files if "glossary" in p.parts}
    assert pages == {"glossary/index.html"} | {f"glossary/{s}/index.html" for s in glossary.slugs}
    with TestClient(create_app(own)) as client:
        for name, path in (
            ("glossary/index.html", "/glossary/"),
            ("glossary/rag/index.html", "/glossary/rag"),
        ):
            assert (out / name).read_bytes() == client.get(path).content, name
    assert not list(out.rglob("*.tmp"))


def test_a_rebuild_removes_a_gone_terms_page_and_every_link_to_it(make_terms, tmp_path):
    settings = Settings(base_url="https://d.example.org")
    terms = {
        "alpha": term_text("Alpha", related=["beta"]),
        "beta": term_text("Beta", related=["alpha", "gamma"]),
        "gamma": term_text("Gamma", related=["beta"]),
    }
    write_glossary_site(tmp_path, settings, load_glossary(make_terms(terms)))
    (tmp_path / "glossary/notes").mkdir()
    (tmp_path / "glossary/notes/index.html").write_text("someone's own page")
    (tmp_path / "glossary/notes/more.txt").write_text("and a file")
    # Gamma is gone, and Alpha's neighbour with it; Beta's page reads the same.
    smaller = {
        "alpha": term_text("Alpha", related=["beta"]),
        "beta": term_text("Beta", related=["alpha"]),
    }
    write_glossary_site(tmp_path, settings, load_glossary(make_terms(smaller)))
    assert not (tmp_path / "glossary/gamma").exists()
    assert (tmp_path / "glossary/notes/index.html").exists()  # not a page of ours alone
    assert "Gamma" not in (tmp_path / "glossary/beta/index.html").read_text()
    assert "Gamma" not in (tmp_path / "glossary/alpha/index.html").read_text()


def test_an_unchanged_page_is_not_written_again(make_terms, tmp_path):
    settings = Settings(base_url="https://d.example.org")
    glossary = load_glossary(make_terms({"alpha": term_text("Alpha"), "beta": term_text("Beta")}))
    write_glossary_site(tmp_path, settings, glossary)
    page = tmp_path / "glossary/alpha/index.html"
    os.utime(page, ns=(1_000_000_000, 1_000_000_000))
    write_glossary_site(tmp_path, settings, glossary)
    assert page.stat().st_mtime_ns == 1_000_000_000
    page.write_text("stale")
    write_glossary_site(tmp_path, settings, glossary)
    assert page.read_text() == render_site(settings, glossary)["glossary/alpha/index.html"]


def test_cli_build_names_the_glossary_folder_once(own, engine, tmp_path):
    out = tmp_path / "site"
    result = CliRunner().invoke(cli_app, ["build", "--week", str(WEEK), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out}/glossary/: 67 glossary pages" in result.output
    assert f"{out}/glossary/rag/index.html" not in result.output
    assert f"{out}/email.html" in result.output
    assert (out / "glossary/rag/index.html").is_file()


# --------------------------------------------------------------------------- DIGEST_SITE_URL


def test_site_url_defaults_to_the_glossary_pages_under_base_url(monkeypatch):
    monkeypatch.delenv("DIGEST_SITE_URL", raising=False)
    assert Settings(base_url="https://news.example.org/").site_url == (
        "https://news.example.org/glossary"
    )
    assert Settings(base_url="https://news.example.org", site_url="").site_url == (
        "https://news.example.org/glossary"
    )
    assert Settings().site_url == "http://localhost:8000/glossary"


@SQLITE_ONLY
def test_a_site_url_elsewhere_gets_the_mails_links_and_the_pages_still_link_to_themselves(
    settings_env, engine, monkeypatch
):
    monkeypatch.setenv("DIGEST_SITE_URL", "https://words.example.net/ai/")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.site_url == "https://words.example.net/ai"
    glossary = load_glossary(STARTER_TERMS)
    record = build_issue(engine, settings, glossary, WEEK, now=NOW, news=[])
    assert f'href="https://words.example.net/ai/{record.featured_slug}"' in (record.html or "")
    with TestClient(create_app(settings)) as client:
        page = client.get(f"/glossary/{record.featured_slug}")
    assert page.status_code == 200
    assert "words.example.net" not in page.text
    assert f'href="{settings.base_url}/glossary/"' in page.text


def test_the_mails_read_it_in_the_glossary_link_opens_its_page(own, engine):
    glossary = load_glossary(STARTER_TERMS)
    record = build_issue(engine, own, glossary, WEEK, now=NOW, news=[])
    term = glossary[record.featured_slug]
    page_url = f"{own.base_url}/glossary/{term.slug}"
    mail = parse(record.html or "")
    [button] = [a for a in mail.all("a") if a.text == "Read it in the glossary"]
    assert button.attrs["href"] == page_url
    assert f"Read it in the glossary: {page_url}" in (record.text or "")
    with TestClient(create_app(own)) as client:
        answer = client.get(path_of(own, page_url))
    assert answer.status_code == 200
    assert parse(answer.text).one("h1").text == term.title


def test_the_index_says_how_many_terms_in_words(make_terms):
    settings = Settings(base_url="https://d.example.org")
    one = load_glossary(make_terms({"alpha": term_text("Alpha")}))
    assert "One term so far" in render_index(settings, one)
    two = load_glossary(make_terms({"alpha": term_text("Alpha"), "beta": term_text("Beta")}))
    assert "2 terms explained in plain language, by category." in render_index(settings, two)


def test_a_terms_pronunciation_and_did_you_know_show_on_its_page_as_text(make_terms):
    terms = make_terms(
        {
            "rag": term_text(
                "RAG",
                extra='pronunciation: "RAG <i>rhymes</i> with bag"\n'
                'did_you_know: "Coined in 2020 & <b>still</b> used."\n',
            ),
            "plain": term_text("Plain", related=["rag"]),
        }
    )
    pages = render_site(Settings(base_url="https://d.example.org"), load_glossary(terms))
    rag = parse(pages["glossary/rag/index.html"])
    assert rag.one("p", class_="pronunciation").text == "Pronunciation: RAG <i>rhymes</i> with bag"
    note = rag.one("aside", class_="note")
    assert note.one("h2").text == "Did you know?"
    assert note.one("p").text == "Coined in 2020 & <b>still</b> used."
    assert not rag.all("i") and not rag.all("b")
    plain = pages["glossary/plain/index.html"]
    assert "Pronunciation" not in plain and "Did you know?" not in plain
