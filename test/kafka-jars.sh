#!/usr/bin/env bash
# Fetches the jars of a single-node Kafka broker (KRaft) for the Kafka queue
# trigger suite, from Maven Central with `mvn dependency:copy-dependencies`,
# into a cache folder outside the repository keyed by the version. Prints that
# folder. Does nothing when the jars are there; with --dir, only prints it.
set -euo pipefail
KAFKA_VERSION=4.1.2
SLF4J_VERSION=2.0.17
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/spore/kafka-${KAFKA_VERSION}

[ "${1:-}" = --dir ] && { echo "$DIR"; exit 0; }
if [ -f "$DIR/.complete" ]; then echo "$DIR"; exit 0; fi
command -v mvn >/dev/null || { echo "kafka-jars: Maven is needed to fetch Kafka's jars (apt-get install maven)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the broker (kafka_2.13), StorageTool's dependencies (kafka-tools) and a logger
# for slf4j (its API named here too: Kafka's own pulls 1.7, which finds no 2.x logger)
cat > "$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>spore.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>${SLF4J_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>${SLF4J_VERSION}</version></dependency>
  </dependencies>
</project>
EOF
# two fetches at once each fill their own folder; the rename is atomic
(cd "$work" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$work/jars" >&2)
touch "$work/jars/.complete"
mkdir -p "$(dirname "$DIR")"
mv -T "$work/jars" "$DIR" 2>/dev/null || [ -f "$DIR/.complete" ]
echo "$DIR"
