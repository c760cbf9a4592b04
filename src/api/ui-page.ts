/**
 * The web page (/ui/): HTML, CSS and one script, all built into the executable (the script
 * by the ui-bundle.ts macro, the rest as text imports) and served with a Content-Security-
 * Policy that keeps every request on this server. No CDN: it works on an air-gapped lab.
 * The page needs no token to load; it asks for one when the API answers 401.
 */
import { Elysia } from "elysia";
import xtermCss from "@xterm/xterm/css/xterm.css" with { type: "text" };
import pageHtml from "../ui/index.html" with { type: "text" };
import pageCss from "../ui/style.css" with { type: "text" };
import { asset, pageCsp } from "./static-assets.ts";
import { uiScript } from "./ui-bundle.ts" with { type: "macro" };

const SCRIPT = uiScript();
// A text import; bun-types declares *.html imports as HTML bundles (Bun's other way to load them).
const HTML = pageHtml as unknown as string;
const CSS = `${xtermCss}\n${pageCss}`;

/** The page's own origin for websockets too: 'self' covers ws: only in newer browsers. */
function csp(host: string | null): string {
  return pageCsp(host ? ` ws://${host} wss://${host}` : "");
}

/** Paths of the page: answered without a token. */
export function isUiPath(path: string): boolean {
  return path === "/" || path === "/ui" || path.startsWith("/ui/");
}

// Elysia matches "/ui/" for "/ui" too (strictPath is off).
export const uiPage = new Elysia({ name: "rcloud-ui" })
  .get("/", ({ redirect }) => redirect("/ui/", 302), { detail: { hide: true } })
  .get(
    "/ui/",
    ({ request }) =>
      new Response(HTML, {
        headers: { "content-type": "text/html; charset=utf-8", "content-security-policy": csp(request.headers.get("host")), "cache-control": "no-cache", "x-content-type-options": "nosniff" },
      }),
    { detail: { hide: true } },
  )
  .get("/ui/app.js", asset(SCRIPT, "text/javascript; charset=utf-8"), { detail: { hide: true } })
  .get("/ui/app.css", asset(CSS, "text/css; charset=utf-8"), { detail: { hide: true } });
