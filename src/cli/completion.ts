/** `rcloud completion bash`: a bash completion script generated from the command table. */
import type { FlagSpec } from "./args.ts";
import { type Command, GLOBAL_FLAGS } from "./context.ts";

/** Commands of the executable that are not API commands (src/main.ts). */
const OTHER_COMMANDS = ["serve", "version", "hv-info", "terraform-provider", "completion", "help"];

function flagWords(flags: FlagSpec[]): string[] {
  return flags.flatMap((f) => [`--${f.name}`, ...(f.short ? [`-${f.short}`] : [])]);
}

function valueCompletion(f: FlagSpec): string {
  const c = f.complete;
  if (c === "file") return `COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null`;
  if (c === "vm" || c === "image" || c === "host") return `COMPREPLY=($(compgen -W "$(_rcloud_names ${c})" -- "$cur"))`;
  if (Array.isArray(c)) return `COMPREPLY=($(compgen -W "${c.join(" ")}" -- "$cur"))`;
  return "COMPREPLY=()";
}

export function bashCompletion(commands: Command[]): string {
  const groups = new Map<string, string[]>();
  for (const c of commands) {
    const [g = "", sub] = c.path.split(" ");
    if (sub) groups.set(g, [...(groups.get(g) ?? []), sub]);
    else groups.set(g, groups.get(g) ?? []);
  }
  groups.set("completion", ["bash"]);
  const top = [...new Set([...groups.keys(), ...OTHER_COMMANDS])];
  const valueFlags = new Set<string>(["--config"]);
  for (const f of [...GLOBAL_FLAGS, ...commands.flatMap((c) => c.flags)]) {
    if (f.value) for (const w of flagWords([f])) valueFlags.add(w);
  }

  const subCases = [...groups]
    .filter(([, subs]) => subs.length)
    .map(([g, subs]) => `      ${g}) COMPREPLY=($(compgen -W "${subs.join(" ")}" -- "$cur")) ;;`)
    .join("\n");
  const flagCases = commands
    .map((c) => `      "${c.path}") flags="${flagWords(c.flags).join(" ")}" ;;`)
    .join("\n");
  const valueCases: string[] = [];
  for (const f of GLOBAL_FLAGS.filter((g) => g.value)) {
    valueCases.push(`    *:${flagWords([f]).join("|*:")}) ${valueCompletion(f)}; return ;;`);
  }
  for (const c of commands) {
    for (const f of c.flags.filter((x) => x.value)) {
      valueCases.push(`    "${c.path}":${flagWords([f]).join(`|"${c.path}":`)}) ${valueCompletion(f)}; return ;;`);
    }
  }
  valueCases.push(`    serve:--config) COMPREPLY=($(compgen -f -- "$cur")); return ;;`);
  const argCases = commands
    .filter((c) => c.completeArg)
    .map((c) => `      "${c.path}") COMPREPLY=($(compgen -W "$(_rcloud_names ${c.completeArg})" -- "$cur")) ;;`)
    .join("\n");

  return `# bash completion for rcloud. Load it with:
#   source <(rcloud completion bash)
# or install it:  rcloud completion bash > /etc/bash_completion.d/rcloud

# Names of VMs, images or hosts from the server, with the --endpoint/--token of the command line.
_rcloud_names() {
  local -a api=()
  local i w
  for ((i = 1; i < \${#COMP_WORDS[@]}; i++)); do
    w=\${COMP_WORDS[i]}
    case $w in
      --endpoint | --token) api+=("$w" "\${COMP_WORDS[i + 1]}"); ((i++)) ;;
    esac
  done
  local bin=\${COMP_WORDS[0]/#\\~/$HOME}
  "$bin" "$1" list -o names "\${api[@]}" 2>/dev/null
}

_rcloud() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=
  ((COMP_CWORD > 0)) && prev=\${COMP_WORDS[COMP_CWORD - 1]}
  local value_flags=" ${[...valueFlags].join(" ")} "
  local cmd= sub= npos=0 i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    case $w in
      --) return 0 ;;
      -*) [[ $value_flags == *" $w "* ]] && ((i++)) ;;
      *)
        if [[ -z $cmd ]]; then cmd=$w
        elif [[ -z $sub && $cmd =~ ^(${[...groups].filter(([, s]) => s.length).map(([g]) => g).join("|")})$ ]]; then sub=$w
        else ((npos++))
        fi ;;
    esac
  done
  local path=$cmd\${sub:+ $sub}

  # the value of a flag
  if [[ $value_flags == *" $prev "* ]]; then
    case "$path:$prev" in
${valueCases.join("\n")}
    esac
    COMPREPLY=()
    return 0
  fi

  if [[ $cur == -* ]]; then
    local flags=
    case "$path" in
${flagCases}
    esac
    COMPREPLY=($(compgen -W "$flags ${flagWords(GLOBAL_FLAGS).join(" ")}" -- "$cur"))
    return 0
  fi

  if [[ -z $cmd ]]; then
    COMPREPLY=($(compgen -W "${top.join(" ")}" -- "$cur"))
  elif [[ -z $sub ]]; then
    case $cmd in
${subCases}
      *) COMPREPLY=() ;;
    esac
  elif ((npos == 0)); then
    case "$path" in
${argCases}
      *) COMPREPLY=() ;;
    esac
  fi
  return 0
}

complete -F _rcloud rcloud
`;
}
