// Apache Avro for Java (the reference implementation) against the govbus wire contract, both ways.
// Driven by tests/integration/test_avro_java_interop.py; one JVM run handles every case.
//
// Usage: java -cp <avro jars>:<classes> AvroInterop <work dir> <schema.avsc>...
// Each schema file is governance_event.v<N>.avsc. For every version N the work dir holds:
//   in-vN.hex   govbus single-object values written with vN, one hex string per line
//   in-vN.json  records in Avro's JSON encoding against vN, one per line
// and this program writes:
//   out-vN.json         each in-vN.hex value decoded by BinaryMessageDecoder (reader schema vN, every
//                       shipped schema known by fingerprint), printed in Avro's JSON encoding
//   out-vN-newest.json  the same values read with the newest schema as the reader (schema resolution)
//   out-vN.hex          each in-vN.json record encoded by BinaryMessageEncoder (vN), one hex per line
//   fingerprints.txt    "N <parsingFingerprint64 as unsigned hex>" per version
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.io.JsonEncoder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

public final class AvroInterop {
  private static final HexFormat HEX = HexFormat.of();

  public static void main(String[] args) throws IOException {
    Path work = Path.of(args[0]);
    Pattern name = Pattern.compile("governance_event\\.v(\\d+)\\.avsc");
    TreeMap<Integer, Schema> schemas = new TreeMap<>();
    for (int i = 1; i < args.length; i++) {
      Path file = Path.of(args[i]);
      Matcher m = name.matcher(file.getFileName().toString());
      if (!m.matches()) {
        throw new IllegalArgumentException("not a governance_event.v<N>.avsc file: " + file);
      }
      // A fresh parser per file: the versions define the same named types.
      schemas.put(Integer.parseInt(m.group(1)), new Schema.Parser().parse(file.toFile()));
    }
    Schema newest = schemas.lastEntry().getValue();
    List<String> fingerprints = new ArrayList<>();
    for (Map.Entry<Integer, Schema> entry : schemas.entrySet()) {
      int version = entry.getKey();
      Schema schema = entry.getValue();
      fingerprints.add(version + " " + Long.toUnsignedString(SchemaNormalization.parsingFingerprint64(schema), 16));
      BinaryMessageDecoder<GenericRecord> exact = decoder(schema, schemas);
      BinaryMessageDecoder<GenericRecord> resolving = decoder(newest, schemas);
      List<String> decoded = new ArrayList<>();
      List<String> decodedNewest = new ArrayList<>();
      for (String line : lines(work.resolve("in-v" + version + ".hex"))) {
        byte[] value = HEX.parseHex(line);
        decoded.add(json(schema, exact.decode(value)));
        decodedNewest.add(json(newest, resolving.decode(value)));
      }
      Files.write(work.resolve("out-v" + version + ".json"), decoded, StandardCharsets.UTF_8);
      Files.write(work.resolve("out-v" + version + "-newest.json"), decodedNewest, StandardCharsets.UTF_8);
      BinaryMessageEncoder<GenericRecord> encoder = new BinaryMessageEncoder<>(GenericData.get(), schema);
      GenericDatumReader<GenericRecord> jsonReader = new GenericDatumReader<>(schema);
      List<String> encoded = new ArrayList<>();
      for (String line : lines(work.resolve("in-v" + version + ".json"))) {
        GenericRecord record = jsonReader.read(null, DecoderFactory.get().jsonDecoder(schema, line));
        ByteBuffer buffer = encoder.encode(record);
        byte[] value = new byte[buffer.remaining()];
        buffer.get(value);
        encoded.add(HEX.formatHex(value));
      }
      Files.write(work.resolve("out-v" + version + ".hex"), encoded, StandardCharsets.UTF_8);
    }
    Files.write(work.resolve("fingerprints.txt"), fingerprints, StandardCharsets.UTF_8);
  }

  private static BinaryMessageDecoder<GenericRecord> decoder(Schema reader, Map<Integer, Schema> writers) {
    // Constructed with the reader schema alone, it would only know that schema's fingerprint;
    // every shipped version is added so the header's fingerprint selects the writer schema.
    BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), reader);
    for (Schema writer : writers.values()) {
      decoder.addSchema(writer);
    }
    return decoder;
  }

  private static List<String> lines(Path path) throws IOException {
    List<String> out = new ArrayList<>();
    for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
      if (!line.isEmpty()) {
        out.add(line);
      }
    }
    return out;
  }

  private static String json(Schema schema, GenericRecord record) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    JsonEncoder encoder = EncoderFactory.get().jsonEncoder(schema, out);
    new GenericDatumWriter<GenericRecord>(schema).write(record, encoder);
    encoder.flush();
    return out.toString(StandardCharsets.UTF_8);
  }
}
