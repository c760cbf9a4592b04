// .proto files are imported as text (`with { type: "text" }`) so `bun build --compile` embeds them.
declare module "*.proto" {
  const text: string;
  export default text;
}
