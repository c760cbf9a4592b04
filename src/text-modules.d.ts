// Files imported as text (`with { type: "text" }`) so `bun build --compile` embeds them.
declare module "*.liquid" {
  const text: string;
  export default text;
}
// The API reference page's assets (src/api/reference-page.ts).
declare module "swagger-ui-dist/swagger-ui-bundle.js" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/swagger-ui.css" {
  const text: string;
  export default text;
}
// The web page's assets (src/api/ui-page.ts).
declare module "@xterm/xterm/css/xterm.css" {
  const text: string;
  export default text;
}
declare module "*.css" {
  const text: string;
  export default text;
}
