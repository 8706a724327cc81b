#!/usr/bin/env bash
# Copy the embedded Apache Kafka broker's jars (pom.xml beside this file) into
# .cache/kafka-<version>/lib with Maven, verifying every checksum (-C). Cached: a second
# run with the same pom does nothing. Without Java 17+ or Maven it says so and exits 0,
# because the embedded stack then falls back to Tansu (README: "Brokers").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
pom="$here/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
dest="${GEODESIC_KAFKA_HOME:-$root/.cache/kafka-$version}"
stamp="$dest/.complete"
want="$(sha256sum "$pom" "$here/log4j2.properties" | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
java_major() {
  java -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p'
}
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  echo "embedded Kafka skipped: Java 17+ not found (install openjdk-17-jre-headless and maven," \
    "then re-run make install); the embedded stack will use Tansu" >&2
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "embedded Kafka skipped: mvn not found (apt-get install maven, then re-run" \
    "make install); the embedded stack will use Tansu" >&2
  exit 0
fi
echo "fetching Apache Kafka $version jars into $dest" >&2
rm -rf "$dest"
mkdir -p "$dest"
if ! mvn -B -C -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$dest/lib" >"$dest/maven.log" 2>&1; then
  tail -n 40 "$dest/maven.log" >&2
  echo "fetching the Kafka jars failed (full log: $dest/maven.log)" >&2
  exit 1
fi
cp "$here/log4j2.properties" "$dest/"
echo "$want" > "$stamp"
