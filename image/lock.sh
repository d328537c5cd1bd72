#!/usr/bin/env bash
# The Debian package lock of the airlock image (image/README.md, "The package lock").
# image/build.sh calls it; tests/tests/image_lock.rs calls it against a mirror it makes itself.
#
#   image/lock.sh prepare --mode strict|prefer|refresh --lock FILE --cache DIR --mirror SOURCES --work DIR
#   image/lock.sh bootstrap --work DIR [--optional "PKG..."] --suite SUITE --target ROOT -- MMDEBSTRAP_OPTION...
#   image/lock.sh finish --work DIR
#
# prepare (before anything is built): puts every locked .deb into a local repository, each from
#   the digest cache (DIR/debs/SHA256.deb; a file whose content does not match its name is set
#   aside as .corrupt) or downloaded from the mirror at its locked version and checked against the
#   lock's SHA-256 (a mismatch fails every mode but refresh: the same version with other content
#   is not a mirror moving on). A locked version that the mirror no longer has is "gone": strict
#   fails naming every gone package and the command that moves the lock; prefer goes on.
#   SOURCES is an apt sources file (one-line .list format or deb822 .sources); file: URIs are
#   used as copy: (apt then copies each .deb into the root's cache, where the build's set is read).
# bootstrap: runs mmdebstrap with the sources the mode allows and records what was installed.
#   - nothing gone: the local repository alone, so nothing but the locked files can be installed;
#   - prefer with packages gone: the local repository pinned above the mirror, so apt resolves
#     the set against both: a locked version wins wherever it is available, a gone one is
#     replaced by the mirror's with the whole dependency closure apt computes for it. Where apt
#     says the closure needs another version of a locked package (a replacement needs a newer
#     library, or a locked package needs a gone one), that package is released to the mirror
#     and the plan (mmdebstrap --simulate) is made again. Every deviation from the lock
#     (package, locked version, built version, SHA-256 of the built .deb, why) is printed and
#     written to WORK/lock/deviations.{tsv,json};
#   - refresh: the mirror alone; the new lock (the .debs the build used, plus the closure of the
#     --optional packages) is written to WORK/lock/packages.lock.new and the change summarised.
# finish (after the whole build succeeded): refresh moves the new lock into place.
set -euo pipefail

die() { echo "lock.sh: $*" >&2; exit 2; }
say() { echo "image: $*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# name version arch of a .deb
deb_id() { dpkg-deb --showformat='${Package} ${Version} ${Architecture}\n' -W "$1"; }
# "name version arch sha256" of each .deb in the given directories.
list_debs() {
  local d f id
  for d in "$@"; do
    for f in "$d"/*.deb; do
      [[ -f $f ]] || continue
      id=$(deb_id "$f") || die "cannot read $f"
      echo "$id $(sha "$f")"
    done
  done | sort -u
}

cmd=${1:-}; shift || true
mode='' lockfile='' cache='' mirror='' work='' optional='' suite='' target=''
while (($#)); do
  case $1 in
    --mode) mode=$2; shift 2 ;;
    --lock) lockfile=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --optional) optional=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[[ -n $work ]] || die "--work DIR is required"
# These paths go into apt's configuration, sources lines and an mmdebstrap hook's shell command.
for v in work lockfile cache mirror target; do
  [[ -n ${!v} ]] || continue
  printf -v "$v" '%s' "$(realpath -m "${!v}")"
  [[ ${!v} =~ ^[A-Za-z0-9._/+-]+$ ]] || die "--$v ${!v}: only letters, digits and ._/+- are allowed in its path"
done
L=$work/lock

# An apt of our own: lists, downloads and package state in $1, sources and preferences as given
# (the host's sources and state are not used; the host's apt.conf.d still is: proxies, validity).
own_apt() { # DIR STATUS PREFERENCES SOURCES...
  local a=$1 status=$2 prefs=$3 src
  shift 3
  rm -rf "$a"; mkdir -p "$a/sources.list.d" "$a/prefs.d" "$a/state/lists/partial" "$a/cache/archives/partial"
  if [[ -f $status ]]; then cp "$status" "$a/status"; else : > "$a/status"; fi
  : > "$a/sources.list"; : > "$a/preferences"
  [[ -f $prefs ]] || prefs=$a/preferences
  for src in "$@"; do
    if [[ -f $src ]]; then cp "$src" "$a/sources.list.d/"; else echo "$src" >> "$a/sources.list.d/build.list"; fi
  done
  cat > "$a/apt.conf" <<EOF
Dir::Etc::SourceList "$a/sources.list";
Dir::Etc::SourceParts "$a/sources.list.d";
Dir::Etc::Preferences "$prefs";
Dir::Etc::PreferencesParts "$a/prefs.d";
Dir::State "$a/state";
Dir::State::status "$a/status";
Dir::Cache "$a/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
Debug::NoLocking "true";
EOF
  # The work directory is private to root: apt's _apt sandbox user could not write there.
  if [[ $(id -u) == 0 ]]; then echo 'APT::Sandbox::User "root";' >> "$a/apt.conf"; fi
  APT_CONFIG=$a/apt.conf apt-get update -q > "$a/update.log" 2>&1 \
    || { cat "$a/update.log" >&2; die "cannot read the package lists of $*"; }
  grep '^\(W\|E\): ' "$a/update.log" >&2 || true   # apt's warnings about the mirror
}

# Lock lines as "name version arch sha256 priority", comments and blank lines left out. The
# priority is the archive's (its override file), which can differ from the one inside the .deb:
# mmdebstrap's minbase installs the archive's Priority: required packages (apt among them, whose
# .deb says "important"), so the local repository must carry the archive's priorities. (A line
# without one, from an older lock, gets the .deb's.)
lock_entries() { awk '!/^#/ && (NF == 4 || NF == 5)' "$1"; }

# The local repository of locked .debs (origin airlock-lock, which prefer pins), with the lock's
# priorities as its override file.
index_repo() {
  (cd "$L/repo" && apt-ftparchive packages . "$L/override" > Packages 2>/dev/null \
    && apt-ftparchive -o APT::FTPArchive::Release::Origin=airlock-lock \
         -o APT::FTPArchive::Release::Label=airlock-lock -o "APT::FTPArchive::Release::Suite=${1:-bookworm}" \
         -o "APT::FTPArchive::Release::Codename=${1:-bookworm}" release . > Release)
}

# Into the digest cache, atomically (concurrent builds share it).
cache_put() { # FILE DIGEST
  local tmp
  tmp=$(mktemp "$cache/debs/.incoming.XXXXXX")
  cp "$1" "$tmp" && mv -f "$tmp" "$cache/debs/$2.deb"
}

prepare() {
  [[ $mode == strict || $mode == prefer || $mode == refresh ]] || die "--mode is strict, prefer or refresh"
  [[ -f $mirror ]] || die "--mirror must be an apt sources file"
  [[ -n $cache ]] || die "--cache DIR is required"
  [[ -n $lockfile ]] || die "--lock FILE is required"
  rm -rf "$L"; mkdir -p "$L/repo" "$L/dl" "$L/released" "$cache/debs"
  local ext=list
  grep -q '^Types:' "$mirror" && ext=sources
  sed -E 's#(^|[[:space:]])file:#\1copy:#g' "$mirror" > "$L/mirror.$ext"
  echo "$L/mirror.$ext" > "$L/mirror"
  : > "$L/gone.txt"; : > "$L/released.txt"; : > "$L/lock.txt"
  echo "$mode" > "$L/mode"
  echo "$cache" > "$L/cache"
  echo "$lockfile" > "$L/lockfile"
  if [[ $mode == refresh ]]; then touch "$L/prepared"; return; fi
  [[ -f $lockfile ]] || die "no $lockfile: run image/build.sh --lock refresh once to write it"
  lock_entries "$lockfile" > "$L/lock.txt"

  # 1. The digest cache: a file is used only if its content is what its name (the lock) says.
  local name version arch digest f got m need=()
  while read -r name version arch digest _; do
    f=$cache/debs/$digest.deb
    if [[ -f $f ]]; then
      got=$(sha "$f")
      if [[ $got == "$digest" ]]; then continue; fi
      say "WARNING the cached $name $version is corrupt (SHA-256 $got, the lock says $digest): set aside as $f.corrupt, fetching it again"
      mv -f "$f" "$f.corrupt"
    fi
    need+=("$name $version $arch $digest")
  done < "$L/lock.txt"

  if ((${#need[@]})); then
    say "fetching ${#need[@]} locked packages from the mirror"
    own_apt "$L/apt" "" "" "$(cat "$L/mirror")"
    # 2. What the mirror still has (binary packages only), in one look-up; the rest is gone.
    local names=() have
    for m in "${need[@]}"; do names+=("${m%% *}"); done
    have=$(APT_CONFIG=$L/apt/apt.conf apt-cache madison "${names[@]}" 2>/dev/null \
      | awk -F' *[|] *' '$3 ~ / Packages$/ {gsub(/^ +/, "", $1); print $1 " " $2}' | sort -u)
    local fetch=() gone=()
    for m in "${need[@]}"; do
      read -r name version arch digest <<<"$m"
      if grep -qxF "$name $version" <<<"$have"; then fetch+=("$m"); else gone+=("$m"); fi
    done
    if ((${#gone[@]})); then
      printf '%s\n' "${gone[@]}" > "$L/gone.txt"
      if [[ $mode == strict ]]; then
        {
          echo "lock.sh: ${#gone[@]} locked packages are in neither the cache nor the mirror:"
          for m in "${gone[@]}"; do read -r name version arch digest <<<"$m"; echo "  $name $version ($arch)"; done
          echo "Move the lock to the mirror's versions with"
          echo "  image/build.sh --lock refresh --bindir DIR --ort LIB [--trust-root ROOT.json] OUT"
          echo "then review and commit the diff of image/packages.lock (image/README.md), or build with --lock prefer."
        } >&2
        exit 2
      fi
      say "WARNING ${#gone[@]} locked packages are no longer on the mirror: $(for m in "${gone[@]}"; do printf '%s ' "${m% * *}"; done)"
    fi
    # 3. Download the rest at their locked versions, all at once, and check each against the lock.
    if ((${#fetch[@]})); then
      local specs=() bad=()
      for m in "${fetch[@]}"; do
        read -r name version arch digest <<<"$m"
        specs+=("$name$([[ $arch == all ]] || echo ":$arch")=$version")
      done
      (cd "$L/dl" && APT_CONFIG=$L/apt/apt.conf apt-get download -q "${specs[@]}" > "$L/download.log" 2>&1) \
        || { tail -20 "$L/download.log" >&2; die "downloading the locked packages from the mirror failed"; }
      for f in "$L"/dl/*.deb; do
        [[ -f $f ]] || continue
        read -r name version arch < <(deb_id "$f")
        digest=$(awk -v n="$name" -v v="$version" '$1 == n && $2 == v {print $4}' "$L/lock.txt")
        got=$(sha "$f")
        if [[ $got == "$digest" ]]; then cache_put "$f" "$digest"
        else bad+=("$name $version: the mirror's .deb has SHA-256 $got, the lock says $digest"); fi
      done
      if ((${#bad[@]})); then
        {
          echo "lock.sh: the mirror serves locked versions with other content than the lock records:"
          printf '  %s\n' "${bad[@]}"
          echo "The same version with other content is corruption or tampering, not the mirror moving on:"
          echo "find out why before moving the lock (image/build.sh --lock refresh, then review the diff)."
        } >&2
        exit 2
      fi
    fi
  fi

  # 4. The local repository: every locked .deb that is not gone, under its Debian file name.
  local priority
  : > "$L/override"
  while read -r name version arch digest priority; do
    f=$cache/debs/$digest.deb
    if [[ ! -f $f ]]; then
      grep -q "^$name " "$L/gone.txt" && continue
      die "$name $version was neither cached nor downloaded"
    fi
    ln -f "$f" "$L/repo/${name}_${version//:/%3a}_$arch.deb" 2>/dev/null || cp "$f" "$L/repo/${name}_${version//:/%3a}_$arch.deb"
    if [[ -n $priority && $priority != - ]]; then
      echo "$name $priority $(dpkg-deb -f "$f" Section | sed 's/^$/misc/')" >> "$L/override"
    fi
  done < "$L/lock.txt"
  index_repo
  touch "$L/prepared"
}

# apt's verdicts on an impossible set, as "package dependency" pairs, from lines such as
#  linux-image-amd64 : Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2) but it is not installable
#                      Breaks: foo (< 2) but 1.0 is to be installed
#  editor : Depends: libnone but it is not installable or
#                    libalt (>= 2.0) but 1.0 is to be installed      <- an alternative
unmet_pairs() {
  awk '
    /unmet dependencies:/ { on = 1; next }
    on && /^E: / { on = 0 }
    on {
      line = $0; dep = ""
      if (match(line, /^ *[^ ]+ : /)) {
        pkg = substr(line, RSTART, RLENGTH); line = substr(line, RSTART + RLENGTH)
        sub(/^ +/, "", pkg); sub(/ : $/, "", pkg); sub(/:.*/, "", pkg)   # "name:arch : " -> name
      }
      sub(/^ +/, "", line)
      if (match(line, /^(Pre-?Depends|Depends|Breaks|Conflicts|Recommends): /)) dep = substr(line, RLENGTH + 1)
      else if (alt) dep = line
      alt = (line ~ / or$/)
      sub(/[ :].*/, "", dep)
      if (pkg != "" && dep != "") print pkg, dep
    }' "$1"
}

# Takes the locked NAME out of the local repository (once a round: $released): the mirror decides
# its version. WHY goes into the deviation report.
release() { # NAME WHY
  [[ $released == *" $1 "* ]] && return
  mv "$L"/repo/"$1"_*.deb "$L/released/"
  echo "$1 $2" >> "$L/released.txt"
  say "releasing $1 from the lock: $2"
  released+="$1 "
}

bootstrap() {
  [[ -f $L/prepared ]] || die "run lock.sh prepare with this --work first"
  [[ -n $suite && -n $target ]] || die "bootstrap needs --suite and --target"
  local mode lockfile mirror_file opt inc f
  cache=$(cat "$L/cache")
  mode=$(cat "$L/mode")
  lockfile=$(cat "$L/lockfile")
  mirror_file=$(cat "$L/mirror")
  # Packages the caller installs from .deb files (--include=/path/x.deb): not from any repository.
  : > "$L/local-debs.txt"
  for opt in "$@"; do
    [[ $opt == --include=* ]] || continue
    IFS=',' read -ra inc <<<"${opt#--include=}"
    for f in "${inc[@]}"; do
      if [[ $f == /* || $f == ./* ]]; then deb_id "$f" | cut -d' ' -f1 >> "$L/local-debs.txt"; fi
    done
  done
  local sources=() pin=()
  case $mode in
    refresh) sources=("$mirror_file") ;;
    strict) sources=("deb [trusted=yes] copy://$L/repo ./") ;;
    prefer)
      sources=("deb [trusted=yes] copy://$L/repo ./")
      if [[ -s $L/gone.txt ]]; then
        sources+=("$mirror_file")
        printf 'Package: *\nPin: release o=airlock-lock\nPin-Priority: 990\n' > "$L/preferences"
        pin=(--aptopt="Dir::Etc::Preferences \"$L/preferences\"")
      fi ;;
  esac
  local mm=(mmdebstrap "${pin[@]}" --skip=download/empty --skip=essential/unlink --skip=cleanup/apt/cache)

  # prefer with packages gone: plan first; release the locked packages apt says stand in the way.
  if [[ $mode == prefer && -s $L/gone.txt ]]; then
    local round pkg dep plan=() pinned released
    # The plan needs apt's own words: mmdebstrap --verbose, whatever the caller chose.
    for opt in "$@"; do
      case $opt in -q|--quiet|-s|--silent|-v|--verbose|-d|--debug) ;; *) plan+=("$opt") ;; esac
    done
    for ((round = 1; ; round++)); do
      rm -rf "$L/plan"
      if "${mm[@]}" --simulate --verbose "${plan[@]}" "$suite" "$L/plan" "${sources[@]}" > "$L/plan.log" 2>&1; then break; fi
      # Decide on the repository as this round found it; release each package once.
      pinned=" $(find "$L/repo" -maxdepth 1 -name '*.deb' -printf '%f\n' | sed 's/_.*//' | tr '\n' ' ')"
      released=" "
      while read -r pkg dep; do
        if [[ $pinned == *" $dep "* ]]; then release "$dep" "the closure of $pkg needs another version"
        elif [[ $pinned == *" $pkg "* ]]; then release "$pkg" "it needs a version of $dep the mirror does not have"
        fi
      done < <(unmet_pairs "$L/plan.log" | sort -u)
      if [[ $released == " " ]]; then
        grep -v '^I: ' "$L/plan.log" | tail -25 >&2
        die "apt finds no consistent package set from the lock and the mirror (above, after $round plans); move the lock with --lock refresh"
      fi
      index_repo "$suite"
    done
    rm -rf "$L/plan"
  fi

  rm -f "$L/root-status"
  "${mm[@]}" --customize-hook="cp \"\$1/var/lib/dpkg/status\" \"$L/root-status\"" \
    "$@" "$suite" "$target" "${sources[@]}"
  record "$mode" "${sources[@]}"
  report "$mode" "$lockfile"
}

# What the build used: the .debs apt put into the root's cache (kept by --skip=cleanup/apt/cache).
# refresh: that, plus the optional packages' closure, is the new lock (and goes into the cache).
record() { # MODE SOURCES...
  local mode=$1 a=$target/var/cache/apt/archives missing prefs='' f id d
  shift
  list_debs "$a" > "$L/used.txt"
  [[ -s $L/used.txt ]] || die "the build left no .debs in $a: nothing to record"
  # Every package mmdebstrap installed must be among them (a file: source would not be).
  if [[ -f $L/root-status ]]; then
    missing=$(awk '/^Package: / {p = $2} /^Status: install ok installed/ {print p}' "$L/root-status" | sort -u \
      | comm -23 - <(cut -d' ' -f1 "$L/used.txt" "$L/local-debs.txt" | sort -u) | tr '\n' ' ')
    [[ -z $missing ]] || die "installed, but not among the .debs apt cached: $missing"
  fi
  : > "$L/optional.txt"
  [[ -n $optional || $mode == refresh ]] || return 0
  # An apt for the build's sources on top of the root's package state as mmdebstrap left it
  # (copied before the caller's customize hooks, which may purge build tools with --force-depends
  # and leave a state apt refuses; the extract variant has none: from nothing). It resolves the
  # optional packages' closure and, for refresh, tells the archive's priorities.
  [[ -f $L/preferences ]] && prefs=$L/preferences
  own_apt "$L/tapt" "$L/root-status" "$prefs" "$@"
  # shellcheck disable=SC2086 # $optional is a list of package names
  if [[ $mode == refresh ]]; then
    if [[ -n $optional ]]; then
      APT_CONFIG=$L/tapt/apt.conf apt-get install -q -y --download-only $optional > "$L/optional.log" 2>&1 \
        || { cat "$L/optional.log" >&2; die "the optional packages ($optional) cannot be resolved"; }
    fi
  elif APT_CONFIG=$L/tapt/apt.conf apt-get install -q -s $optional > "$L/optional.log" 2>&1; then
    # Locked, but no deviation when the build does not install them.
    awk '/^Inst / {print $2}' "$L/optional.log" | sort -u > "$L/optional.txt"
  else
    grep '^E: ' "$L/optional.log" >&2 || true
    say "WARNING the optional packages ($optional) do not resolve against the lock: their closure is listed as deviations"
  fi
  [[ $mode == refresh ]] || return 0
  # The new lock's .debs: what the build used and what the optional packages add, each into the
  # digest cache (so that the next build of this lock needs no mirror) as it is listed.
  for f in "$a"/*.deb "$L"/tapt/cache/archives/*.deb; do
    [[ -f $f ]] || continue
    id=$(deb_id "$f") || die "cannot read $f"
    d=$(sha "$f")
    [[ -f $cache/debs/$d.deb && $(sha "$cache/debs/$d.deb") == "$d" ]] || cache_put "$f" "$d"
    echo "$id $d"
  done | sort -u > "$L/used+optional.txt"
  # The archive's priority of each (see lock_entries), from the mirror's index.
  # shellcheck disable=SC2046 # one name=version argument a package
  APT_CONFIG=$L/tapt/apt.conf apt-cache show $(awk '{print $1 "=" $2}' "$L/used+optional.txt") 2>/dev/null \
    | awk '/^Package: / {p = $2} /^Version: / {v = $2} /^Priority: / {q = $2} function out() { if (p != "" && !((p, v) in seen)) { seen[p, v] = 1; print p, v, q }; p = v = q = "" }
             /^$/ {out()} END {out()}' \
    > "$L/priorities.txt"
  awk 'FILENAME == ARGV[1] {pr[$1 " " $2] = ($3 == "" ? "-" : $3); next} {print $0, (($1 " " $2) in pr ? pr[$1 " " $2] : "-")}' \
    "$L/priorities.txt" "$L/used+optional.txt" > "$L/lock.new"
}

report() { # MODE LOCKFILE
  local mode=$1 lockfile=$2
  if [[ $mode == refresh ]]; then
    local old=$L/lock.old
    if [[ -f $lockfile ]]; then lock_entries "$lockfile" | sort > "$old"; else : > "$old"; fi
    { echo "# Debian packages of the airlock image (installed, build-only and optional): name version"
      echo "# architecture sha256-of-.deb archive-priority. Written by image/build.sh --lock refresh on $(date -u +%Y-%m-%d)."
      cat "$L/lock.new"
    } > "$L/packages.lock.new"
    awk 'FILENAME == ARGV[1] {old[$1] = $2 " " $4; next} {new[$1] = $2 " " $4}
      END {
        for (p in new) if (!(p in old)) a++; else if (old[p] != new[p]) { split(old[p], o, " "); split(new[p], n, " "); if (o[1] == n[1]) s = s " " p; c++ }
        for (p in old) if (!(p in new)) r++
        printf "image: the new lock: %d packages, %d added, %d removed, %d changed (written when the build succeeds; review: git diff)\n", length(new), a, r, c > "/dev/stderr"
        if (s != "") printf "image: WARNING same version, other SHA-256 than the old lock:%s\n", s > "/dev/stderr"
      }' "$old" "$L/lock.new"
    echo '[]' > "$L/deviations.json"
    return
  fi
  # Deviations: each used package that is not as locked, each locked package that is not used
  # (unless only the optional packages need it).
  awk -v L="$L" '
    BEGIN { while ((getline l < (L "/gone.txt")) > 0) { split(l, f, " "); gone[f[1]] = 1 }
            while ((getline l < (L "/released.txt")) > 0) { n = index(l, " "); rel[substr(l, 1, n - 1)] = substr(l, n + 1) }
            while ((getline l < (L "/optional.txt")) > 0) opt[l] = 1
            while ((getline l < (L "/lock.txt")) > 0) { split(l, f, " "); lv[f[1]] = f[2]; ls[f[1]] = f[4] } }
    { used[$1] = 1
      if (!($1 in lv)) { print $1 "\t-\t" $2 "\t" $4 "\tnot in the lock: part of a replacement'"'"'s dependency closure"; next }
      if (lv[$1] == $2 && ls[$1] == $4) next
      why = ($1 in gone) ? "the locked version is gone from the mirror" : ($1 in rel) ? "released from the lock: " rel[$1] : (lv[$1] == $2) ? "same version, other SHA-256" : "replaced by the mirror'"'"'s version"
      print $1 "\t" lv[$1] "\t" $2 "\t" $4 "\t" why }
    END { for (p in lv) if (!(p in used) && !(p in opt))
            print p "\t" lv[p] "\t-\t-\t" (p in gone ? "gone from the mirror; not in the image" : "locked, but not in the image (the new closure does not need it)") }
  ' "$L/used.txt" | sort > "$L/deviations.tsv"
  awk -F'\t' 'BEGIN { printf "[" } { printf "%s\n  {\"package\": \"%s\", \"locked_version\": \"%s\", \"built_version\": \"%s\", \"sha256\": \"%s\", \"reason\": \"%s\"}", (NR > 1 ? "," : ""), $1, $2, $3, $4, $5 } END { print (NR ? "\n]" : "]") }' \
    "$L/deviations.tsv" > "$L/deviations.json"
  if [[ ! -s $L/deviations.tsv ]]; then
    say "no deviations from the lock: every package is the locked file"
  else
    say "WARNING $(wc -l < "$L/deviations.tsv") deviations from $(basename "$lockfile") (recorded in manifest.json):"
    { printf 'package\tlocked\tbuilt\tsha256 of the built .deb\twhy\n'; cat "$L/deviations.tsv"; } \
      | awk -F'\t' '{ printf "  %-28s %-22s %-22s %-64s %s\n", $1, $2, $3, $4, $5 }' >&2
  fi
}

finish() {
  [[ -f $L/prepared ]] || die "run lock.sh prepare and bootstrap with this --work first"
  [[ $(cat "$L/mode") == refresh ]] || return 0
  [[ -s $L/packages.lock.new ]] || die "no new lock: lock.sh bootstrap did not finish"
  local lockfile tmp
  lockfile=$(cat "$L/lockfile")
  tmp=$(mktemp "$lockfile.XXXXXX")
  cp "$L/packages.lock.new" "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$lockfile"
  say "wrote $lockfile ($(lock_entries "$lockfile" | wc -l) packages)"
}

case $cmd in
  prepare) prepare ;;
  bootstrap) bootstrap "$@" ;;
  finish) finish ;;
  *) die "usage: lock.sh prepare|bootstrap|finish ... (see the head of this file)" ;;
esac
