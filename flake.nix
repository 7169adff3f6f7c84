# DataWarehouse: Nix flake for the workspace binaries, the dev shell and the checks.
#
# Pins (docs/NIX.md says how they were chosen and hashed, and how to update them):
# - nixpkgs: nixos-25.11 at 8fd9daa3 (2026-05-10). Three independent sources agree on its
#   narHash (two third-party flake.lock files, and a fetchTarball hash of the same rev).
#   nixos-26.05 is the newer stable line, but no narHash for it could be checked here, so it is
#   not pinned yet. nixos-25.11 stopped getting security fixes in mid-2026: move to 26.05 with
#   `nix flake update` on the first machine that has network (docs/NIX.md).
# - Rust: the workspace needs rustc >= 1.95 (edition 2024, rust-version 1.95). nixos-25.11
#   branched in November 2025 and ships an older rustc. Rust 1.95 came out on 2026-04-16, and
#   stable branches do not take new rustc minor versions. So the toolchain comes from
#   oxalica/rust-overlay, pinned to a commit that has the 1.95.0 manifest. 1.95.0 is also the
#   toolchain on the development machines and in CI.
#
# This flake passes `nix-instantiate --parse`, and `nix flake metadata --offline` reads its lock.
# It cannot be built on the development machines (no nixpkgs, no binary cache).
{
  description = "DataWarehouse: bare-metal storage appliance OS (Rust workspace + NixOS)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      # rust-overlay only needs nixpkgs to build the toolchain derivations: use ours, so there
      # is one nixpkgs in the closure.
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      rust-overlay,
    }:
    let
      inherit (nixpkgs) lib;

      # aarch64-linux evaluates the same way; only x86_64-linux is the appliance's target, and
      # neither has been built yet (see the header).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = lib.genAttrs systems;

      version = (lib.importTOML ./Cargo.toml).workspace.package.version;

      fs = lib.fileset;

      # Every `fuzz/` directory is a cargo-fuzz crate with its own [workspace] table and its own
      # Cargo.lock: not a member of this workspace, not in the root Cargo.lock, and its corpora
      # change all the time. `target/` never reaches a flake source (it is not tracked by git)
      # but is excluded in case someone builds from a path: reference.
      notFuzzOrTarget = fs.fromSource (
        lib.cleanSourceWith {
          src = ./.;
          filter =
            path: type:
            !(
              type == "directory"
              && builtins.elem (baseNameOf path) [
                "fuzz"
                "target"
              ]
            );
        }
      );

      # What cargo reads to build: the workspace manifest and lock, and each crate's tree (the
      # tests and their data too: cargo refuses a manifest whose [[test]] files are missing).
      # Docs, Nix files, .ci/ and the shell harness stay out, so editing them rebuilds nothing.
      cargoFiles = fs.unions (
        [
          ./Cargo.toml
          ./Cargo.lock
          ./rustfmt.toml
        ]
        ++ map fs.maybeMissing [
          ./appliance
          ./firmware-probe
          ./tui
          ./webui
        ]
      );
      buildFiles = fs.difference (fs.intersection cargoFiles notFuzzOrTarget) (
        fs.maybeMissing ./appliance/scripts
      );

      buildSrc = fs.toSource {
        root = ./.;
        fileset = buildFiles;
      };

      # The test suite also reads docs/ (dw-probe's schema test compares docs/dw-probe.schema.json
      # and docs/PROBE.md with the Rust types).
      testSrc = fs.toSource {
        root = ./.;
        fileset = fs.union buildFiles (fs.maybeMissing ./docs);
      };

      perSystem =
        system:
        let
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ rust-overlay.overlays.default ];
          };

          rustVersion = "1.95.0";
          # cargo + rustc + rust-std: all the package build needs.
          toolchain = pkgs.rust-bin.stable.${rustVersion}.minimal;
          # The same release with the lint tools, for the dev shell and the lint checks.
          devToolchain = pkgs.rust-bin.stable.${rustVersion}.minimal.override {
            extensions = [
              "clippy"
              "rustfmt"
              "rust-src"
            ];
          };

          rustPlatform = pkgs.makeRustPlatform {
            cargo = toolchain;
            rustc = toolchain;
          };

          # The udev crate links libudev and tss-esapi links tpm2-tss (tss2-esys, -sys, -mu,
          # -tctildr); both are found through pkg-config. No crate runs bindgen today
          # (tss-esapi-sys ships pre-generated bindings for x86_64/aarch64 Linux); bindgenHook sets
          # LIBCLANG_PATH so that enabling one later does not break the build.
          nativeBuildDeps = [
            pkgs.pkg-config
            rustPlatform.bindgenHook
          ];
          buildDeps = [
            pkgs.udev
            pkgs.tpm2-tss
          ];

          # The real tools the test suite drives (appliance/scripts/packages.txt, group "test").
          testTools = [
            pkgs.swtpm
            pkgs.tpm2-tools
            pkgs.qemu # qemu-img, qemu-nbd; qemu-system for the VM harness
            pkgs.libnbd # nbdcopy, nbdinfo
            pkgs.nbdkit
            pkgs.fio
            pkgs.e2fsprogs
            pkgs.util-linux
          ];

          # Every binary of the workspace in one derivation: result/bin/{dwd, dw, dw-probe, dw-keyd, ...}.
          # Dependencies are vendored from Cargo.lock (one fixed-output fetch per crate, no
          # hash to maintain: there are no git dependencies).
          datawarehouse = rustPlatform.buildRustPackage {
            pname = "datawarehouse";
            inherit version;
            src = buildSrc;
            cargoLock.lockFile = ./Cargo.lock;
            cargoBuildFlags = [ "--workspace" ];
            nativeBuildInputs = nativeBuildDeps;
            buildInputs = buildDeps;
            # Tests run in checks.tests (debug profile, with the test tools), not here.
            doCheck = false;
            meta = {
              description = "DataWarehouse storage appliance binaries";
              license = lib.licenses.asl20;
              platforms = lib.platforms.linux;
              mainProgram = "dw";
            };
          };

          cargoDeps = rustPlatform.importCargoLock { lockFile = ./Cargo.lock; };

          # A check that runs one cargo command over the workspace with the vendored
          # dependencies (cargoSetupHook points cargo at them) and produces an empty output.
          mkCargoCheck =
            {
              name,
              command,
              extraInputs ? [ ],
            }:
            pkgs.stdenv.mkDerivation {
              name = "datawarehouse-${name}";
              src = testSrc;
              inherit cargoDeps;
              strictDeps = true;
              nativeBuildInputs = [
                devToolchain
                rustPlatform.cargoSetupHook
              ]
              ++ nativeBuildDeps
              ++ extraInputs;
              buildInputs = buildDeps;
              buildPhase = ''
                runHook preBuild
                export HOME="$TMPDIR"
                ${command}
                runHook postBuild
              '';
              installPhase = ''
                runHook preInstall
                touch "$out"
                runHook postInstall
              '';
            };
        in
        {
          packages = {
            default = datawarehouse;
            inherit datawarehouse;
          };

          checks = {
            # The release build of every binary.
            package = datawarehouse;

            # The same lint gate as CI.
            clippy = mkCargoCheck {
              name = "clippy";
              command = "cargo clippy --workspace --all-targets --frozen -- -D warnings";
            };

            # rustfmt needs no dependencies, so no vendoring here.
            fmt =
              pkgs.runCommand "datawarehouse-fmt"
                {
                  nativeBuildInputs = [ devToolchain ];
                }
                ''
                  cp -r ${buildSrc} src
                  chmod -R u+w src
                  cd src
                  export HOME="$TMPDIR"
                  cargo fmt --all -- --check
                  touch "$out"
                '';

            # The test suite inside the Nix sandbox: no network (servers bind 127.0.0.1, which
            # the sandbox has), no root, no loop devices, no /dev/tpm*, no KVM. Tests whose
            # prerequisite is missing skip with a printed reason, because DW_REQUIRE_ALL_TESTS
            # is not set here. Where the rest runs:
            # - root and loop-device tests, and everything else with DW_REQUIRE_ALL_TESTS=1:
            #   .ci/run (appliance/scripts/test.sh) on the Debian CI machine;
            # - swtpm, qemu-img/qemu-nbd, nbdkit, libnbd and fio tests run here as well, since
            #   those tools need neither root nor devices;
            # - the whole appliance booted with real disks and a TPM: vm-tests/.
            tests = mkCargoCheck {
              name = "tests";
              extraInputs = testTools;
              command = "cargo test --workspace --frozen --no-fail-fast";
            };
          };

          devShells.default = pkgs.mkShell {
            nativeBuildInputs = [
              devToolchain
              pkgs.pkg-config
            ]
            ++ testTools;
            buildInputs = buildDeps;
            # For crates that run bindgen (none today; see nativeBuildDeps).
            LIBCLANG_PATH = "${pkgs.llvmPackages.libclang.lib}/lib";
          };

          formatter = pkgs.nixfmt;
        };

      outputsBySystem = forAllSystems perSystem;
    in
    {
      packages = lib.mapAttrs (_: o: o.packages) outputsBySystem;
      checks = lib.mapAttrs (_: o: o.checks) outputsBySystem;
      devShells = lib.mapAttrs (_: o: o.devShells) outputsBySystem;
      formatter = lib.mapAttrs (_: o: o.formatter) outputsBySystem;
    };
}
