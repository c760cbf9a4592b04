/**
 * What rcloud's built-in pages (the web console at /ui/, the API reference at /swagger) share:
 * a Content-Security-Policy that keeps every request on this server, and static assets
 * served from strings built into the executable.
 */

/**
 * The pages' policy. Both need inline styles (xterm.js rows, Swagger UI's React style
 * attributes) and data: images and fonts; `connect` adds sources beyond 'self' (websockets).
 */
export function pageCsp(connect = ""): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    `connect-src 'self'${connect}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/** A handler answering `body` as `contentType`, revalidated on every load. */
export function asset(body: string, contentType: string): () => Response {
  return () => new Response(body, { headers: { "content-type": contentType, "cache-control": "no-cache", "x-content-type-options": "nosniff" } });
}
