/**
 * The API reference page (/swagger): Swagger UI from the pinned swagger-ui-dist package, built
 * into the executable (text imports are embedded by `bun build --compile`). Nothing is loaded
 * from a CDN, so the page works without internet access and runs no code but ours; its
 * Content-Security-Policy keeps every request on this origin. The OpenAPI document it shows is
 * /swagger/json (made by @elysiajs/swagger).
 */
import { Elysia } from "elysia";
import bundleJs from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "text" };
import { asset, pageCsp } from "./static-assets.ts";

// validatorUrl null: Swagger UI would otherwise fetch a badge from validator.swagger.io.
const INIT_JS = `window.ui = SwaggerUIBundle({
  url: "/swagger/json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
`;

const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>rcloud API</title>
  <link rel="stylesheet" href="/swagger/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/swagger/swagger-ui-bundle.js"></script>
  <script src="/swagger/init.js"></script>
</body>
</html>
`;

const CSP = pageCsp();

/** Routes of the page and its assets; registered after the swagger plugin, whose CDN page at /swagger they replace. */
export const apiReferencePage = new Elysia({ name: "rcloud-api-reference" })
  .get("/swagger", () => new Response(PAGE_HTML, { headers: { "content-type": "text/html; charset=utf-8", "content-security-policy": CSP, "cache-control": "no-cache" } }), {
    detail: { hide: true },
  })
  .get("/swagger/swagger-ui-bundle.js", asset(bundleJs, "text/javascript; charset=utf-8"), { detail: { hide: true } })
  .get("/swagger/swagger-ui.css", asset(swaggerCss, "text/css; charset=utf-8"), { detail: { hide: true } })
  .get("/swagger/init.js", asset(INIT_JS, "text/javascript; charset=utf-8"), { detail: { hide: true } });
