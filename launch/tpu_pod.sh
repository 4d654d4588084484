#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: creates the slice with gcloud, installs this project on every
# worker, then runs the same python -m syncon_jax.main command on all workers at once. Each
# worker joins the run by itself (syncon_jax/main.py detects the TPU VM).
#
#   launch/tpu_pod.sh --name=syncon-v4-32 --zone=us-central2-b --accelerator=v4-32 \
#     --workdir=/mnt/shared/runs/birdsnap -- --config=configs/birdsnap.py \
#     --config.data.manual_dir=/mnt/shared/data/birdsnap \
#     --config.data.synthetic_dir=/mnt/shared/data/birdsnap_dalle
#
# --workdir must be a directory every worker reaches under the same path (Filestore/NFS, or a
# bucket mounted with gcsfuse): every process writes its part of each checkpoint there.
# Arguments after -- go to syncon_jax.main unchanged. --dry-run prints the gcloud commands,
# one per line, shell-quoted, instead of running them.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: launch/tpu_pod.sh --name=NAME --zone=ZONE --workdir=DIR [options] [-- MAIN_ARGS...]
  --name=NAME          TPU VM (slice) name
  --zone=ZONE          e.g. us-central2-b
  --workdir=DIR        the run's workdir, on storage shared by every worker
  --accelerator=TYPE   slice type (default v4-32)
  --version=VERSION    TPU software version (default tpu-ubuntu2204-base)
  --project=PROJECT    (default: gcloud's configured project)
  --repo=URL           git repository the workers clone (default: this checkout's origin)
  --ref=REF            commit or branch to check out (default: this checkout's HEAD)
  --spot               create a Spot slice
  --skip-create        use an existing slice
  --skip-install       the workers already hold the project at --ref
  --dry-run            print the commands instead of running them
EOF
  exit 2
}

name="" zone="" workdir="" project="" repo="" ref=""
accelerator="v4-32"
version="tpu-ubuntu2204-base"
spot=0 skip_create=0 skip_install=0 dry_run=0
main_args=()
while (($#)); do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --repo=*) repo="${1#*=}" ;;
    --ref=*) ref="${1#*=}" ;;
    --spot) spot=1 ;;
    --skip-create) skip_create=1 ;;
    --skip-install) skip_install=1 ;;
    --dry-run) dry_run=1 ;;
    --)
      shift
      main_args=("$@")
      break
      ;;
    -h | --help) usage ;;
    *)
      echo "tpu_pod.sh: unknown option $1" >&2
      usage
      ;;
  esac
  shift
done

for required in name zone workdir; do
  if [[ -z "${!required}" ]]; then
    echo "tpu_pod.sh: --$required is required" >&2
    usage
  fi
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "$repo" ]]; then
  repo="$(git -C "$here" remote get-url origin 2>/dev/null)" || {
    echo "tpu_pod.sh: this checkout has no 'origin' remote; pass --repo=URL" >&2
    exit 2
  }
fi
if [[ -z "$ref" ]]; then
  ref="$(git -C "$here" rev-parse HEAD)"
  if [[ -n "$(git -C "$here" status --porcelain --untracked-files=no)" ]]; then
    echo "tpu_pod.sh: warning: uncommitted changes stay here; the workers check out $ref" >&2
  fi
fi

# Quotes its arguments for a POSIX shell, as Python's shlex.quote does, and joins them.
quote() {
  local arg out=() pattern='^[A-Za-z0-9_@%+=:,./-]+$' sq="'"
  for arg in "$@"; do
    if [[ "$arg" =~ $pattern ]]; then
      out+=("$arg")
    else
      out+=("'${arg//$sq/$sq\\$sq$sq}'")
    fi
  done
  echo "${out[*]}"
}

# Prints (--dry-run) or runs one command.
run() {
  if ((dry_run)); then
    quote "$@"
  else
    "$@"
  fi
}

where=(--zone="$zone")
if [[ -n "$project" ]]; then
  where+=(--project="$project")
fi
on_all_workers=(gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command)

if ((!skip_create)); then
  create=(gcloud compute tpus tpu-vm create "$name" "${where[@]}"
    --accelerator-type="$accelerator" --version="$version")
  if ((spot)); then
    create+=(--spot)
  fi
  run "${create[@]}"
fi

if ((!skip_install)); then
  # The TPU images ship Python 3.10; uv brings the 3.11 the project needs. One line, so that
  # --dry-run prints one command per line.
  steps=(
    "{ command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; }"
    "export PATH=\"\$HOME/.local/bin:\$PATH\""
    "{ [ -d syncon_jax ] || git clone $(quote "$repo") syncon_jax; }"
    "cd syncon_jax"
    "git fetch --quiet origin $(quote "$ref")"
    "git checkout --quiet FETCH_HEAD"
    "{ [ -x .venv/bin/python ] || uv venv --python 3.11 .venv; }"
    'uv pip install --quiet --python .venv/bin/python -e ".[tpu]"'
  )
  install="${steps[0]}"
  for step in "${steps[@]:1}"; do
    install+=" && $step"
  done
  run "${on_all_workers[@]}" "$install"
fi

train="cd syncon_jax && $(quote .venv/bin/python -m syncon_jax.main --workdir="$workdir" "${main_args[@]}")"
run "${on_all_workers[@]}" "$train"
