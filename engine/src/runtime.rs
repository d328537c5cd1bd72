//! Finding and loading ONNX Runtime (once per process) and building sessions with the
//! configured execution provider (CUDA with its options, or CPU).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use airlock_config::{Config, Provider, Serving};
use ort::session::Session;

/// The ONNX Runtime version the set-up command installs.
pub const ORT_VERSION: &str = "1.31.1";

/// Why the engine cannot start or load a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No ONNX Runtime library was found.
    #[error(
        "ONNX Runtime not found; looked in: {0}. Install it with scripts/setup.sh (it unpacks \
         libonnxruntime.so.{ORT_VERSION} from the onnxruntime wheel into the per-user cache), or set \
         [engine] onnxruntime_library or ORT_DYLIB_PATH to its path"
    )]
    NotFound(String),
    /// The library could not be loaded or initialised.
    #[error("ONNX Runtime at {path}: {message}")]
    Load {
        /// The library.
        path: String,
        /// What failed.
        message: String,
    },
    /// A session could not be built.
    #[error("{0}")]
    Session(String),
}

/// The per-user cache the set-up command installs ONNX Runtime into.
pub fn user_cache_library() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("airlock/onnxruntime")
            .join(ORT_VERSION)
            .join(format!("libonnxruntime.so.{ORT_VERSION}")),
    )
}

/// The search order: the config's path, `ORT_DYLIB_PATH`, the image's `/usr/lib/airlock/`,
/// then the per-user cache.
pub fn locate_library(config: &Config) -> Result<PathBuf, EngineError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = &config.engine.onnxruntime_library {
        candidates.push(p.clone());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("/usr/lib/airlock/libonnxruntime.so"));
    candidates.push(PathBuf::from(format!(
        "/usr/lib/airlock/libonnxruntime.so.{ORT_VERSION}"
    )));
    candidates.extend(user_cache_library());
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    Err(EngineError::NotFound(
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// The process-wide ONNX Runtime environment.
pub struct Runtime {
    env: ort::environment::Environment,
    /// Which library was loaded.
    pub library: PathBuf,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

impl Runtime {
    /// Loads ONNX Runtime once per process (later calls return the same runtime).
    pub fn get(config: &Config) -> Result<&'static Runtime, EngineError> {
        let r = RUNTIME.get_or_init(|| {
            let lib = locate_library(config).map_err(|e| e.to_string())?;
            let env = ort::init_from(&lib)
                .map_err(|e| format!("ONNX Runtime at {}: {e}", lib.display()))?
                .with_name("airlockd")
                .build()
                .map_err(|e| format!("ONNX Runtime at {}: {e}", lib.display()))?;
            tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
            Ok(Runtime { env, library: lib })
        });
        r.as_ref().map_err(|m| EngineError::Load {
            path: "(search order)".into(),
            message: m.clone(),
        })
    }

    /// Builds a session for `model` with the settings' provider. Returns the session, the
    /// provider actually used, and why the preferred provider was not used (degraded), if so.
    pub fn session(
        &self,
        model: &Path,
        s: &Serving,
        provider: Provider,
    ) -> Result<Session, EngineError> {
        let err =
            |e: ort::Error| EngineError::Session(format!("cannot load {}: {e}", model.display()));
        let mut b = Session::builder(&self.env).map_err(err)?;
        b = b
            .with_intra_op_spinning(s.intra_op_spinning)
            .map_err(|e| err(e.into()))?;
        if s.intra_op_threads > 0 {
            b = b
                .with_intra_threads(s.intra_op_threads as usize)
                .map_err(|e| err(e.into()))?;
        }
        if provider == Provider::Cuda {
            use ort::ep::cuda::ConvAlgorithmSearch;
            let mut cuda = ort::ep::CUDA::default().with_device_id(s.device_id as i32);
            if s.gpu_mem_limit.0 > 0 {
                cuda = cuda.with_memory_limit(s.gpu_mem_limit.0 as usize);
            }
            cuda = cuda.with_conv_algorithm_search(match s.cudnn_conv_search.as_str() {
                "exhaustive" => ConvAlgorithmSearch::Exhaustive,
                "default" => ConvAlgorithmSearch::Default,
                _ => ConvAlgorithmSearch::Heuristic,
            });
            b = b
                .with_execution_providers([cuda.build().error_on_failure()])
                .map_err(|e| {
                    EngineError::Session(format!("CUDA execution provider unavailable: {e}"))
                })?;
        }
        b.commit_from_file(model).map_err(err)
    }
}
