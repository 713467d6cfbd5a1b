// Parse and validate an AsyncAPI document with the official parser (and its Avro schema parser, so the
// Avro payloads are checked too). Prints {"valid", "errors", "warnings"} as JSON; exit 1 when invalid.
import { Parser, fromFile } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';

const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());
const { document, diagnostics } = await fromFile(parser, process.argv[2]).parse();
const show = (d) => ({ code: d.code, message: d.message, path: d.path.join('/') });
const errors = diagnostics.filter((d) => d.severity === 0).map(show);
const warnings = diagnostics.filter((d) => d.severity === 1).map(show);
const valid = document !== undefined && errors.length === 0;
console.log(JSON.stringify({ valid, version: valid ? document.version() : null, errors, warnings }));
process.exit(valid ? 0 : 1);
