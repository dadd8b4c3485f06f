//! `cargo xtask sign`: codesign (macOS) or rcodesign plans, and checking a signature's structure.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use object::macho;
use object::read::macho::{LoadCommandVariant, MachHeader};
use sha2::{Digest, Sha256};

use crate::exec::{Cmd, Plan, Step, tools_root};

/// The apple-codesign release that was tested (docs/toolchain.md section 4).
pub const RCODESIGN_VERSION: &str = "0.29.0";

/// How to sign. The identity never comes from the repository: flags or environment only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignMode {
    /// Apple's codesign with a keychain identity (macOS).
    Codesign {
        /// Identity name or SHA-1, as `codesign --sign` takes it.
        identity: String,
    },
    /// rcodesign ad hoc (no certificate).
    AdHoc,
    /// rcodesign with a PEM certificate and key.
    Pem {
        /// Certificate file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
    },
}

/// Signing options from the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct SignArgs {
    /// `--identity`.
    pub identity: Option<String>,
    /// `--pem-cert`.
    pub pem_cert: Option<PathBuf>,
    /// `--pem-key`.
    pub pem_key: Option<PathBuf>,
    /// `--adhoc`.
    pub adhoc: bool,
    /// `--no-timestamp` (rcodesign: no timestamp server; offline machines).
    pub no_timestamp: bool,
}

/// codesign's identity for an ad hoc signature.
pub const AD_HOC_IDENTITY: &str = "-";

/// Picks the mode: flags first, then `MT_SIGN_IDENTITY`, `MT_SIGN_PEM_CERT`/`MT_SIGN_PEM_KEY`;
/// ad hoc when nothing is given (codesign on macOS, rcodesign elsewhere).
pub fn mode(
    args: &SignArgs,
    env: &dyn Fn(&str) -> Option<String>,
    macos: bool,
) -> Result<SignMode> {
    let identity = args.identity.clone().or_else(|| env("MT_SIGN_IDENTITY"));
    let cert = args
        .pem_cert
        .clone()
        .or_else(|| env("MT_SIGN_PEM_CERT").map(PathBuf::from));
    let key = args
        .pem_key
        .clone()
        .or_else(|| env("MT_SIGN_PEM_KEY").map(PathBuf::from));
    let chosen = usize::from(args.adhoc)
        + usize::from(identity.is_some())
        + usize::from(cert.is_some() || key.is_some());
    if chosen > 1 {
        bail!("choose one of --adhoc, --identity (MT_SIGN_IDENTITY), --pem-cert/--pem-key");
    }
    if let Some(identity) = identity {
        if !macos {
            bail!(
                "a keychain identity needs macOS codesign; use --pem-cert/--pem-key or --adhoc here"
            );
        }
        return Ok(SignMode::Codesign { identity });
    }
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(SignMode::Pem { cert, key }),
        // A Mac has codesign: no need to install rcodesign there.
        (None, None) if macos => Ok(SignMode::Codesign {
            identity: AD_HOC_IDENTITY.into(),
        }),
        (None, None) => Ok(SignMode::AdHoc),
        _ => bail!("--pem-cert and --pem-key (MT_SIGN_PEM_CERT, MT_SIGN_PEM_KEY) go together"),
    }
}

/// The plan installing rcodesign under `tools_root` (notarization support left out: it needs Apple).
pub fn install_rcodesign_plan(root: &Path) -> Plan {
    let mut plan = Plan::new();
    plan.push(Step::Note(format!(
        "installing rcodesign {RCODESIGN_VERSION} (apple-codesign, takes a few minutes)"
    )));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    plan.run(
        Cmd::new(cargo)
            .args(["install", "apple-codesign", "--version", RCODESIGN_VERSION])
            // A debug build compiles in half the time (3.5 vs 7 CPU minutes, measured) and
            // still signs a kext in seconds; this keeps `cargo xtask test` well inside CI's budget.
            .args(["--no-default-features", "--locked", "--debug", "--root"])
            .path_arg(&tools_root(root))
            // Build in a temporary directory, not in anyone's target dir.
            .env_remove("CARGO_TARGET_DIR"),
    );
    plan
}

/// The rcodesign binary: on PATH, or in `target/tools`; `None` when it must be installed.
pub fn find_rcodesign(root: &Path) -> Option<String> {
    if Cmd::new("rcodesign").arg("--version").succeeds() {
        return Some("rcodesign".into());
    }
    let local = tools_root(root).join("bin/rcodesign");
    local.is_file().then(|| local.display().to_string())
}

/// Refuses to sign a bundle that has no linked Mach-O executable: signing would rewrite the
/// bundle and only then fail. Checked before any tool runs, so the bundle is left untouched.
pub fn require_linked(bundle: &Path, executable: &str) -> Result<()> {
    let how = "the kext is linked on a Mac by `cargo xtask build` (on other machines \
               `cargo xtask bundle` writes only Info.plist); run that, then `cargo xtask sign`. \
               Nothing was changed";
    if !bundle.join("Contents/Info.plist").is_file() {
        bail!(
            "{} is not a bundle (no Contents/Info.plist): {how}",
            bundle.display()
        );
    }
    let exe = bundle.join("Contents/MacOS").join(executable);
    let Ok(data) = std::fs::read(&exe) else {
        bail!(
            "{} has no linked executable (Contents/MacOS/{executable}): {how}",
            bundle.display()
        );
    };
    let magic = data.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
    let macho = magic.is_some_and(|m| {
        u32::from_le_bytes(m) == macho::MH_MAGIC_64 || u32::from_be_bytes(m) == macho::FAT_MAGIC
    });
    if !macho {
        bail!("{} is not a Mach-O executable: {how}", exe.display());
    }
    Ok(())
}

/// The signing plan for `bundle`.
pub fn plan(mode: &SignMode, bundle: &Path, rcodesign: &str, no_timestamp: bool) -> Plan {
    let mut plan = Plan::new();
    match mode {
        SignMode::Codesign { identity } => {
            let mut cmd = Cmd::new("codesign").arg("--force");
            if identity != AD_HOC_IDENTITY {
                cmd = cmd.arg("--timestamp");
            }
            plan.run(cmd.args(["--sign", identity]).path_arg(bundle));
            plan.run(
                Cmd::new("codesign")
                    .args(["--verify", "--strict", "--verbose=2"])
                    .path_arg(bundle),
            );
        }
        SignMode::AdHoc => plan.run(Cmd::new(rcodesign).arg("sign").path_arg(bundle)),
        SignMode::Pem { cert, key } => {
            let mut cmd = Cmd::new(rcodesign)
                .args(["sign", "--pem-file"])
                .path_arg(cert)
                .arg("--pem-file")
                .path_arg(key);
            if no_timestamp {
                cmd = cmd.args(["--timestamp-url", "none"]);
            }
            plan.run(cmd.path_arg(bundle));
        }
    }
    plan
}

/// What a code signature holds, for one Mach-O slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSignature {
    /// CPU type of the slice.
    pub cputype: u32,
    /// CodeDirectory identifier.
    pub identifier: String,
    /// CodeDirectory flags (0x2 = ad hoc).
    pub flags: u32,
    /// Number of code pages hashed (all verified).
    pub code_slots: u32,
    /// Whether a non-empty CMS signature blob is present.
    pub has_cms: bool,
}

/// `CS_ADHOC` in CodeDirectory flags.
pub const CS_ADHOC: u32 = 0x2;
const CSMAGIC_EMBEDDED_SIGNATURE: u32 = 0xfade_0cc0;
const CSMAGIC_CODEDIRECTORY: u32 = 0xfade_0c02;
const CSMAGIC_BLOBWRAPPER: u32 = 0xfade_0b01;
const CSSLOT_CODEDIRECTORY: u32 = 0;
const CSSLOT_SIGNATURESLOT: u32 = 0x10000;
const CS_HASHTYPE_SHA256: u8 = 2;
/// Special slot of the Info.plist hash.
const CSSLOT_INFOSLOT: u32 = 1;
/// Special slot of the CodeResources hash.
const CSSLOT_RESOURCEDIR: u32 = 3;

fn be32(b: &[u8], off: usize) -> Result<u32> {
    let s = b
        .get(off..off + 4)
        .with_context(|| format!("signature truncated at {off}"))?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Files whose hashes sit in the CodeDirectory's special slots (bundle signing).
#[derive(Debug, Clone, Default)]
pub struct SpecialFiles {
    /// `Contents/Info.plist` bytes.
    pub info_plist: Option<Vec<u8>>,
    /// `Contents/_CodeSignature/CodeResources` bytes.
    pub code_resources: Option<Vec<u8>>,
}

/// Parses and verifies the embedded signature of one thin Mach-O image: SuperBlob, SHA-256
/// CodeDirectory, every code page hash, and the Info.plist / CodeResources special slots.
pub fn verify_thin(image: &[u8], special: &SpecialFiles) -> Result<SliceSignature> {
    let header = macho::MachHeader64::<object::Endianness>::parse(image, 0)
        .context("not a 64-bit Mach-O image")?;
    let e = header.endian()?;
    let mut sig_range = None;
    let mut cmds = header.load_commands(e, image, 0)?;
    while let Some(cmd) = cmds.next()? {
        if cmd.cmd() == macho::LC_CODE_SIGNATURE {
            if let LoadCommandVariant::LinkeditData(le) = cmd.variant()? {
                sig_range = Some((le.dataoff.get(e) as usize, le.datasize.get(e) as usize));
            }
        }
    }
    let (off, size) = sig_range.context("no LC_CODE_SIGNATURE: the image is not signed")?;
    let blob = image
        .get(off..off + size)
        .context("LC_CODE_SIGNATURE points outside the file")?;
    if be32(blob, 0)? != CSMAGIC_EMBEDDED_SIGNATURE {
        bail!("signature is not an embedded-signature SuperBlob");
    }
    let count = be32(blob, 8)? as usize;
    let mut cd = None;
    let mut has_cms = false;
    for i in 0..count {
        let slot = be32(blob, 12 + 8 * i)?;
        let at = be32(blob, 16 + 8 * i)? as usize;
        let magic = be32(blob, at)?;
        let len = be32(blob, at + 4)? as usize;
        let body = blob
            .get(at..at + len)
            .context("blob outside the signature")?;
        match (slot, magic) {
            (CSSLOT_CODEDIRECTORY, CSMAGIC_CODEDIRECTORY) => cd = Some(body),
            (CSSLOT_SIGNATURESLOT, CSMAGIC_BLOBWRAPPER) => has_cms = len > 8,
            _ => {}
        }
    }
    let cd = cd.context("no CodeDirectory in the signature")?;
    let flags = be32(cd, 12)?;
    let hash_offset = be32(cd, 16)? as usize;
    let ident_offset = be32(cd, 20)? as usize;
    let n_special = be32(cd, 24)?;
    let n_code = be32(cd, 28)?;
    let code_limit = be32(cd, 32)? as usize;
    let (hash_size, hash_type, page_shift) = (
        usize::from(*cd.get(36).context("short CodeDirectory")?),
        cd[37],
        cd.get(39).copied().context("short CodeDirectory")?,
    );
    if hash_type != CS_HASHTYPE_SHA256 || hash_size != 32 {
        bail!("CodeDirectory hash type {hash_type} size {hash_size}, expected SHA-256");
    }
    let identifier = cd
        .get(ident_offset..)
        .and_then(|s| s.split(|b| *b == 0).next())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .context("CodeDirectory identifier outside the blob")?;
    let page = 1usize << page_shift;
    if code_limit > off || n_code as usize != code_limit.div_ceil(page) {
        bail!(
            "code limit {code_limit} / {n_code} pages do not cover the image up to its signature"
        );
    }
    for i in 0..n_code as usize {
        let start = i * page;
        let end = (start + page).min(code_limit);
        let want = cd
            .get(hash_offset + i * 32..hash_offset + (i + 1) * 32)
            .context("code hash outside the CodeDirectory")?;
        if Sha256::digest(&image[start..end]).as_slice() != want {
            bail!("code page {i} hash mismatch: the image changed after signing");
        }
    }
    let special_hash = |slot: u32| -> Option<&[u8]> {
        (slot <= n_special)
            .then(|| hash_offset.checked_sub(slot as usize * 32))
            .flatten()
            .and_then(|at| cd.get(at..at + 32))
    };
    for (slot, name, bytes) in [
        (CSSLOT_INFOSLOT, "Info.plist", &special.info_plist),
        (CSSLOT_RESOURCEDIR, "CodeResources", &special.code_resources),
    ] {
        if let Some(bytes) = bytes {
            let want = special_hash(slot).with_context(|| format!("no {name} hash slot"))?;
            if Sha256::digest(bytes).as_slice() != want {
                bail!("{name} hash mismatch: the bundle changed after signing");
            }
        }
    }
    Ok(SliceSignature {
        cputype: header.cputype(e),
        identifier,
        flags,
        code_slots: n_code,
        has_cms,
    })
}

/// Verifies every slice of a thin or universal executable.
pub fn verify_executable(data: &[u8], special: &SpecialFiles) -> Result<Vec<SliceSignature>> {
    crate::kext::objects::thin_images(data)?
        .into_iter()
        .map(|thin| verify_thin(thin, special))
        .collect()
}

/// Verifies a signed bundle: every slice of `Contents/MacOS/<exe>` against the bundle's files.
pub fn verify_bundle(bundle: &Path, executable: &str) -> Result<Vec<SliceSignature>> {
    let read = |rel: &str| {
        std::fs::read(bundle.join(rel)).with_context(|| format!("read {}/{rel}", bundle.display()))
    };
    let exe = read(&format!("Contents/MacOS/{executable}"))?;
    let special = SpecialFiles {
        info_plist: Some(read("Contents/Info.plist")?),
        code_resources: Some(read("Contents/_CodeSignature/CodeResources")?),
    };
    verify_executable(&exe, &special)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn mode_comes_from_flags_then_environment_and_defaults_to_ad_hoc() {
        assert_eq!(
            mode(&SignArgs::default(), &env_none, false).unwrap(),
            SignMode::AdHoc
        );
        let env =
            |k: &str| (k == "MT_SIGN_IDENTITY").then(|| "Developer ID Application: X".to_string());
        assert_eq!(
            mode(&SignArgs::default(), &env, true).unwrap(),
            SignMode::Codesign {
                identity: "Developer ID Application: X".into()
            }
        );
        // A keychain identity is refused off macOS rather than silently signing ad hoc.
        assert!(mode(&SignArgs::default(), &env, false).is_err());
        let pem_env = |k: &str| match k {
            "MT_SIGN_PEM_CERT" => Some("c.crt".to_string()),
            "MT_SIGN_PEM_KEY" => Some("c.key".to_string()),
            _ => None,
        };
        assert_eq!(
            mode(&SignArgs::default(), &pem_env, false).unwrap(),
            SignMode::Pem {
                cert: "c.crt".into(),
                key: "c.key".into()
            }
        );
        let half = SignArgs {
            pem_cert: Some("c.crt".into()),
            ..SignArgs::default()
        };
        assert!(mode(&half, &env_none, false).is_err());
        let both = SignArgs {
            adhoc: true,
            identity: Some("x".into()),
            ..SignArgs::default()
        };
        assert!(mode(&both, &env_none, true).is_err());
    }

    #[test]
    fn a_mac_signs_ad_hoc_with_its_own_codesign() {
        // rcodesign would cost a 3.5 CPU-minute install on a machine that has codesign.
        for args in [
            SignArgs::default(),
            SignArgs {
                adhoc: true,
                ..SignArgs::default()
            },
        ] {
            let m = mode(&args, &env_none, true).unwrap();
            assert_eq!(
                m,
                SignMode::Codesign {
                    identity: AD_HOC_IDENTITY.into()
                }
            );
            assert_eq!(mode(&args, &env_none, false).unwrap(), SignMode::AdHoc);
            let text = plan(&m, Path::new("/r/maptrace.kext"), "", false).render();
            // An ad hoc signature has no certificate, so no timestamp either.
            assert_eq!(
                text,
                "codesign --force --sign - /r/maptrace.kext\n\
                 codesign --verify --strict --verbose=2 /r/maptrace.kext\n"
            );
        }
    }

    #[test]
    fn plans_call_the_right_tool() {
        let b = Path::new("/r/maptrace.kext");
        let cs = plan(
            &SignMode::Codesign {
                identity: "ID".into(),
            },
            b,
            "rcodesign",
            false,
        );
        let cmds: Vec<_> = cs.commands().collect();
        assert_eq!(cmds[0].program, "codesign");
        assert!(cmds[0].has_arg("ID") && cmds[0].has_arg("--timestamp"));
        assert!(cmds[1].has_arg("--verify"));
        let adhoc = plan(&SignMode::AdHoc, b, "/t/rcodesign", false);
        assert_eq!(adhoc.render(), "/t/rcodesign sign /r/maptrace.kext\n");
        let pem = SignMode::Pem {
            cert: "c.crt".into(),
            key: "c.key".into(),
        };
        let p = plan(&pem, b, "rcodesign", true);
        assert_eq!(
            p.render(),
            "rcodesign sign --pem-file c.crt --pem-file c.key --timestamp-url none /r/maptrace.kext\n"
        );
    }

    #[test]
    fn install_plan_is_pinned_and_lean() {
        let p = install_rcodesign_plan(Path::new("/r"));
        let cmd = p.commands().next().unwrap();
        for a in [
            "apple-codesign",
            RCODESIGN_VERSION,
            "--no-default-features",
            "--locked",
            "/r/target/tools",
        ] {
            assert!(cmd.has_arg(a), "{a} missing from {cmd}");
        }
        assert!(cmd.env_remove.iter().any(|k| k == "CARGO_TARGET_DIR"));
    }

    /// A minimal signed image: header, LC_CODE_SIGNATURE, one page of code, then a SuperBlob
    /// with a SHA-256 CodeDirectory (special slots 1..3) and an optional CMS wrapper.
    fn signed_image(ident: &str, flags: u32, info: &[u8], resources: &[u8], cms: bool) -> Vec<u8> {
        const PAGE: usize = 4096;
        let be = |v: u32| v.to_be_bytes();
        let mut img = vec![0u8; PAGE];
        let le = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        le(&mut img, 0, macho::MH_MAGIC_64);
        le(&mut img, 4, crate::kext::kernel::CPU_TYPE_X86_64);
        le(&mut img, 8, 3);
        le(&mut img, 12, macho::MH_EXECUTE);
        le(&mut img, 16, 1);
        le(&mut img, 20, 16);
        for (i, b) in img.iter_mut().enumerate().skip(64) {
            *b = (i % 251) as u8;
        }
        // CodeDirectory: 44-byte fixed part (version 0x20001), identifier, then hashes.
        let n_special = 3u32;
        let ident_off = 44;
        let hash_off = ident_off + ident.len() + 1 + 32 * n_special as usize;
        let mut cd = Vec::new();
        for v in [
            0xfade_0c02,
            0,
            0x20001,
            flags,
            hash_off as u32,
            ident_off as u32,
            n_special,
            1,
            PAGE as u32,
        ] {
            cd.extend(be(v));
        }
        cd.extend([32, CS_HASHTYPE_SHA256, 0, 12]);
        cd.extend(be(0));
        cd.extend(ident.as_bytes());
        cd.push(0);
        cd.extend(Sha256::digest(resources)); // slot 3
        cd.extend([0u8; 32]); // slot 2: requirements (not checked)
        cd.extend(Sha256::digest(info)); // slot 1
        let code = Sha256::digest(&img[..PAGE]);
        cd.extend(code);
        let len = cd.len() as u32;
        cd[4..8].copy_from_slice(&be(len));
        let mut blobs = vec![(CSSLOT_CODEDIRECTORY, cd)];
        if cms {
            let mut w = be(CSMAGIC_BLOBWRAPPER).to_vec();
            w.extend(be(12));
            w.extend(be(0xdead_beef));
            blobs.push((CSSLOT_SIGNATURESLOT, w));
        }
        let mut sb = Vec::new();
        let header_len = 12 + 8 * blobs.len();
        let total: usize = header_len + blobs.iter().map(|(_, b)| b.len()).sum::<usize>();
        sb.extend(be(CSMAGIC_EMBEDDED_SIGNATURE));
        sb.extend(be(total as u32));
        sb.extend(be(blobs.len() as u32));
        let mut at = header_len;
        for (slot, b) in &blobs {
            sb.extend(be(*slot));
            sb.extend(be(at as u32));
            at += b.len();
        }
        for (_, b) in &blobs {
            sb.extend(b);
        }
        // LC_CODE_SIGNATURE right after the header.
        le(&mut img, 32, macho::LC_CODE_SIGNATURE);
        le(&mut img, 36, 16);
        le(&mut img, 40, PAGE as u32);
        le(&mut img, 44, sb.len() as u32);
        // The load command is part of the hashed page: rehash it.
        let code = Sha256::digest(&img[..PAGE]);
        let cd_hash_at = header_len + hash_off;
        sb[cd_hash_at..cd_hash_at + 32].copy_from_slice(&code);
        img.extend(sb);
        img
    }

    #[test]
    fn a_valid_signature_verifies_and_tampering_is_caught() {
        let special = SpecialFiles {
            info_plist: Some(b"<plist/>".to_vec()),
            code_resources: Some(b"resources".to_vec()),
        };
        let img = signed_image(
            "org.example.kext",
            CS_ADHOC,
            b"<plist/>",
            b"resources",
            false,
        );
        let s = verify_thin(&img, &special).unwrap();
        assert_eq!(s.identifier, "org.example.kext");
        assert_eq!(s.flags & CS_ADHOC, CS_ADHOC);
        assert_eq!((s.code_slots, s.has_cms), (1, false));
        assert_eq!(s.cputype, crate::kext::kernel::CPU_TYPE_X86_64);

        let mut code = img.clone();
        code[100] ^= 1;
        let err = verify_thin(&code, &special).unwrap_err().to_string();
        assert!(err.contains("code page 0 hash mismatch"), "{err}");

        let other_plist = SpecialFiles {
            info_plist: Some(b"<plist>changed</plist>".to_vec()),
            ..special.clone()
        };
        let err = verify_thin(&img, &other_plist).unwrap_err().to_string();
        assert!(err.contains("Info.plist hash mismatch"), "{err}");

        let with_cms = signed_image("x.y", 0, b"<plist/>", b"resources", true);
        assert!(verify_thin(&with_cms, &special).unwrap().has_cms);

        let mut bad_magic = img.clone();
        bad_magic[4096] ^= 0xff;
        assert!(verify_thin(&bad_magic, &special).is_err());
    }

    #[test]
    fn unsigned_and_garbage_images_are_rejected() {
        assert!(verify_thin(b"garbage", &SpecialFiles::default()).is_err());
        assert!(
            verify_executable(
                &[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 9],
                &SpecialFiles::default()
            )
            .is_err()
        );
    }
}
