import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The official Java client (kafka-clients) producing what tests/integration/test_standard_kafka_clients.py gives it,
 * with its default settings plus those of the properties file (args[0]) to the topic args[1].
 * stdin: one record per line, "key value name:value ...", each hex, "-" for null. stdout: "partition offset" per
 * record, in order; "FAILED <exception>" and exit code 3 when a send fails.
 */
public final class StdinProducer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = Files.newInputStream(Path.of(args[0]))) {
            props.load(in);
        }
        HexFormat hex = HexFormat.of();
        List<String> lines = new BufferedReader(new InputStreamReader(System.in)).lines().toList();
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (String line : lines) {
                String[] f = line.split(" ", -1);
                RecordHeaders headers = new RecordHeaders();
                for (int i = 2; i < f.length; i++) {
                    int colon = f[i].indexOf(':');
                    String v = f[i].substring(colon + 1);
                    headers.add(f[i].substring(0, colon), v.equals("-") ? null : hex.parseHex(v));
                }
                sent.add(producer.send(new ProducerRecord<>(args[1], null, null,
                        f[0].equals("-") ? null : hex.parseHex(f[0]), f[1].equals("-") ? null : hex.parseHex(f[1]),
                        headers)));
            }
            producer.flush();
            for (Future<RecordMetadata> s : sent) {
                RecordMetadata md = s.get();
                System.out.println(md.partition() + " " + md.offset());
            }
        } catch (ExecutionException e) {
            System.out.println("FAILED " + e.getCause());
            System.exit(3);
        }
    }
}
