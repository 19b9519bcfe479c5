# Sourced by the setup scripts: run a long step quietly, but say what it is and that it is moving.
#   with_progress LABEL LOG COMMAND...   runs COMMAND with its output in LOG; every ${PROGRESS_EVERY:-20}
#                                        s prints "LABEL: N s ... <the log's last line>"; on failure
#                                        prints the log's tail. Returns COMMAND's exit status.
with_progress() {
  local label=$1 log=$2 start=$SECONDS pid status last
  shift 2
  mkdir -p "$(dirname "$log")"
  "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq "${PROGRESS_EVERY:-20}"); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      # cut counts bytes: a character cut in two is dropped (iconv -c), so the line stays UTF-8
      last=$(tail -c 2000 "$log" 2>/dev/null | tr '\r' '\n' | grep -v '^[[:space:]]*$' | tail -1 | cut -c1-100 |
        { iconv -c -f UTF-8 -t UTF-8 2>/dev/null || LC_ALL=C tr -cd '\11\40-\176'; })
      printf '  %s: %d s ...%s\n' "$label" $((SECONDS - start)) "${last:+ $last}" >&2
    fi
  done
  wait "$pid" && status=0 || status=$?
  if [ "$status" != 0 ]; then
    tail -n 30 "$log" >&2
    echo "  $label failed after $((SECONDS - start)) s (whole log: $log)" >&2
  fi
  return "$status"
}
