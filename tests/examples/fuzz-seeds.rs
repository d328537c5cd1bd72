//! Writes seed inputs for the fuzz targets from real fixtures: the demo bundle's tar stream
//! (mode byte 1: the harness compresses it), the compressed bundle (mode byte 0), a manifest,
//! a trust root, an `.npy` file and the demo ONNX model.

use airlock_tests::fixtures::{self, Fixture, Keys};

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let (reader, manifest) = (root.join("bundle_reader"), root.join("manifest"));
    std::fs::create_dir_all(&reader)?;
    std::fs::create_dir_all(&manifest)?;
    let f = Fixture::demo("demo", "1.0.0");
    let tar = fixtures::tar_bytes(&f.entries(&f.sign(&[Keys::bundle(1)])));
    std::fs::write(reader.join("demo-tar"), [&[1u8][..], &tar].concat())?;
    std::fs::write(
        reader.join("demo-zstd"),
        [&[0u8][..], &f.good_bundle()].concat(),
    )?;
    std::fs::write(manifest.join("manifest.json"), f.manifest_bytes())?;
    std::fs::write(
        manifest.join("root.json"),
        fixtures::to_json(&fixtures::trust_root_v1()),
    )?;
    std::fs::write(manifest.join("x.npy"), &f.files[1].data)?;
    std::fs::write(manifest.join("model.onnx"), &f.files[0].data)?;
    println!("seeds written under {}", root.display());
    Ok(())
}
