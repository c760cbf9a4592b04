// Files imported as text (`with { type: "text" }`) so `bun build --compile` embeds them.
declare module "*.liquid" {
  const text: string;
  export default text;
}
